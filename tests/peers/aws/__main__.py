"""`python -m tests.peers.aws --host 127.0.0.1 --port N`: the AWS peer's server."""

from tests.peers.aws.server import main

main()
