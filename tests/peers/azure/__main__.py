"""`python -m tests.peers.azure --port N --workdir DIR`: the Azure peer."""

from tests.peers.azure.server import main

main()
