"""Azurite, Microsoft's Azure Storage emulator (npm `azurite`, pinned in package.json),
as a process on a loopback port: the blob service only, with the flags PEERS.md names.

Azurite serves the Storage protocol the product's azure-storage-blob client speaks (page
blobs for managed disks' data, block blobs for the azblob repository). Where it differs
from Azure (page-range diffs) a harness front corrects it; see tests/peers/azure/."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.peers.tools import stop_process

ROOT = Path(__file__).resolve().parents[3]
BINARY = ROOT / "node_modules" / ".bin" / "azurite-blob"

# Azurite's one well-known development account (documented by Microsoft; not a secret).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
               "K1SZFPTOtr/KBHBeksoGMGw==")


class AzuriteStartError(RuntimeError):
    pass


def connection_string(blob_endpoint: str) -> str:
    """The development account's connection string for a blob endpoint
    (`http://127.0.0.1:PORT/devstoreaccount1`)."""
    return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={blob_endpoint};")


class Azurite:
    """One Azurite blob service: `start()` returns once it answers HTTP, `stop()` ends it.
    Data lives in memory (a fresh account each start)."""

    def __init__(self, workdir: Path, port: int, startup_timeout: float = 60.0):
        self.workdir, self.port, self.startup_timeout = workdir, port, startup_timeout
        self.endpoint = f"http://127.0.0.1:{port}/{ACCOUNT}"
        self.log_path = workdir / "azurite.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Azurite:
        if not BINARY.exists():
            raise AzuriteStartError(f"{BINARY} is missing: run `make test`, which installs "
                                    "azurite with npm")
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            # The binary, not npx, so the pid is the server's. Without --disableTelemetry
            # it tries the internet; azure-storage-blob sends a newer API version than
            # Azurite 3.35 knows, hence --skipApiVersionCheck.
            self.process = subprocess.Popen(
                [str(BINARY), "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
                 "--inMemoryPersistence",
                 "--skipApiVersionCheck", "--loose", "--disableTelemetry", "--silent"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                break
            try:
                # Any HTTP answer (an auth error for this anonymous list) means it serves.
                urllib.request.urlopen(f"{self.endpoint}?comp=list", timeout=2).close()
                return
            except urllib.error.HTTPError:
                return
            except OSError:
                time.sleep(0.1)  # polling a port that is not open yet, not a readiness guess
        self.stop()
        raise AzuriteStartError(f"Azurite did not start; see {self.log_path}")

    def stop(self) -> None:
        stop_process(self.process)
