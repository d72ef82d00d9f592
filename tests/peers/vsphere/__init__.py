"""The vSphere test peer: govmomi's vcsim (Debian's 0.24.2), behind a TLS front that
corrects it to vSphere's snapshot and CBT semantics. (Full notes below are being written.)
"""
