"""The Azure peer: Azurite for the Storage protocol, a front that corrects what Azurite
gets wrong, and a harness Azure Resource Manager (no emulator exists)."""
