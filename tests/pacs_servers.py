"""Real PACS servers for the tests: Orthanc (Debian package) on free loopback ports."""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pynetdicom import AE
from pynetdicom.sop_class import Verification

DCMTK = Path("/usr/bin")  # pip packages may shadow dcmtk's tool names on PATH


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dcmtk(tool: str) -> str:
    path = DCMTK / tool
    if not path.exists():
        raise RuntimeError(f"dcmtk's {tool} is not installed; run scripts/test, which installs dcmtk")
    return str(path)


def terminate(process: subprocess.Popen[bytes] | None) -> None:
    """Stop a server process politely, then firmly."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for_echo(
    port: int,
    aet: str,
    deadline: float = 30.0,
    process: subprocess.Popen[bytes] | None = None,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Block until the SCP on ``port`` answers a C-ECHO (or fail after ``deadline`` s), over
    DICOM TLS with ``tls``."""
    ae = AE(ae_title="WAITER")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.connection_timeout = 2
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the PACS process exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            time.sleep(0.1)  # polling readiness of an external process: nothing to wait on
            continue
        assoc = ae.associate("127.0.0.1", port, ae_title=aet, tls_args=(tls, "localhost") if tls else None)
        if assoc.is_established:
            status = assoc.send_c_echo()
            assoc.release()
            if status and status.Status == 0:
                return
        time.sleep(0.1)  # polling readiness of an external process: nothing to wait on
    raise RuntimeError(f"no C-ECHO answer on port {port} after {deadline} s")


DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"  # Debian's orthanc-dicomweb


@dataclass(frozen=True)
class TlsFiles:
    """Orthanc's DICOM TLS: its certificate and key, the CA bundle it trusts, whether a peer
    must show a certificate, and a client certificate and key for the tests' own checks."""

    cert: Path
    key: Path
    trusted: Path
    require_peer_cert: bool = True
    client: tuple[Path, Path] | None = None


class Orthanc:
    """An Orthanc process with its own storage, config and free ports."""

    def __init__(
        self,
        folder: Path,
        *,
        aet: str = "ORTHANC",
        modalities: dict[str, tuple[str, int]] | None = None,
        nodelay: bool = True,
        extra: dict[str, object] | None = None,
        dicomweb: bool = False,
        tls: TlsFiles | None = None,
        tls_modalities: frozenset[str] = frozenset(),
    ) -> None:
        self.folder = folder
        self.tls = tls  # DICOM TLS on Orthanc's DICOM port (it then speaks nothing else there)
        self.tls_modalities = tls_modalities  # modalities Orthanc reaches over TLS (C-MOVE destinations)
        self.aet = aet
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.modalities = modalities or {}
        self.nodelay = nodelay
        self.extra = extra or {}
        self.dicomweb = dicomweb
        self.process: subprocess.Popen[bytes] | None = None

    def config(self) -> dict[str, object]:
        storage = str(self.folder / "storage")
        return {
            "Name": "asyncdicom-test",
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": False,
            "DicomModalities": {
                name.lower(): {"AET": name, "Host": host, "Port": port, "UseDicomTls": name in self.tls_modalities}
                for name, (host, port) in self.modalities.items()
            },
            **self._tls_settings(),
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowMove": True,
            "DicomAlwaysAllowGet": True,
            "DicomScuTimeout": 10,
            "MaximumPduLength": 131072,
            "SynchronousCMove": True,
            "OverwriteInstances": False,
            "Plugins": [DICOMWEB_PLUGIN] if self.dicomweb else [],
            "DicomWeb": {"Enable": self.dicomweb, "Root": "/dicom-web/"},
            "StorageAccessOnFind": "Never",
            "HttpServerEnabled": True,
            "LimitFindResults": 0,
            "LimitFindInstances": 0,
            **self.extra,
        }

    def _tls_settings(self) -> dict[str, object]:
        if self.tls is None:
            return {}
        return {
            "DicomTlsEnabled": True,
            "DicomTlsCertificate": str(self.tls.cert),
            "DicomTlsPrivateKey": str(self.tls.key),
            "DicomTlsTrustedCertificates": str(self.tls.trusted),
            "DicomTlsRemoteCertificateRequired": self.tls.require_peer_cert,
        }

    def client_context(self) -> ssl.SSLContext | None:
        """A client context trusting Orthanc's CA (with a client certificate), for readiness checks."""
        if self.tls is None:
            return None
        context = ssl.create_default_context(cafile=str(self.tls.trusted))
        if self.tls.client is not None:
            context.load_cert_chain(str(self.tls.client[0]), str(self.tls.client[1]))
        return context

    def start(self) -> Orthanc:
        binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
        if not Path(binary).exists():
            raise RuntimeError("Orthanc is not installed; run scripts/test, which installs it")
        self.folder.mkdir(parents=True, exist_ok=True)
        config_file = self.folder / "orthanc.json"
        config_file.write_text(json.dumps(self.config(), indent=2))
        env = dict(os.environ)
        if self.nodelay:
            env["TCP_NODELAY"] = "1"
        with (self.folder / "orthanc.log").open("wb") as log:
            self.process = subprocess.Popen([binary, str(config_file)], stdout=log, stderr=subprocess.STDOUT, env=env)
        wait_for_echo(self.dicom_port, self.aet, process=self.process, tls=self.client_context())
        return self

    def store(self, folder: Path) -> None:
        """Load every file under ``folder`` with dcmtk storescu."""
        env = dict(os.environ, TCP_NODELAY="1")
        subprocess.run(
            [
                dcmtk("storescu"),
                "-aec",
                self.aet,
                "-aet",
                "LOADER",
                "+sd",
                "+r",
                "-q",
                "127.0.0.1",
                str(self.dicom_port),
                str(folder),
            ],
            check=True,
            env=env,
            timeout=600,
        )

    def upload(self, files: list[Path]) -> None:
        """Store files through Orthanc's REST API, exactly as they are (no transcoding)."""
        import urllib.request

        for file in files:
            request = urllib.request.Request(
                f"http://127.0.0.1:{self.http_port}/instances",
                data=file.read_bytes(),
                method="POST",
                headers={"Content-Type": "application/dicom"},
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                response.read()

    def add_modality(self, aet: str, host: str, port: int) -> None:
        """Register a C-MOVE destination while Orthanc runs (its REST API, as an operator would)."""
        import urllib.request

        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}/modalities/{aet.lower()}",
            data=json.dumps({"AET": aet, "Host": host, "Port": port}).encode(),
            method="PUT",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
        self.modalities[aet] = (host, port)

    @property
    def dicomweb_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dicom-web"

    def stop(self) -> None:
        terminate(self.process)
        self.process = None


class Dcmqrscp:
    """dcmtk's dcmqrscp with its own config, storage and free port (files registered by dcmqridx)."""

    def __init__(self, folder: Path, *, aet: str = "QRSCP", peers: dict[str, tuple[str, int]] | None = None) -> None:
        self.folder = folder
        self.aet = aet
        self.port = free_port()
        self.peers = peers or {}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def storage(self) -> Path:
        return self.folder / "db"

    def start(self) -> Dcmqrscp:
        self.storage.mkdir(parents=True, exist_ok=True)
        hosts = "\n".join(f"{name.lower()} = ({name}, {host}, {port})" for name, (host, port) in self.peers.items())
        config = self.folder / "dcmqrscp.cfg"
        config.write_text(
            f"NetworkTCPPort = {self.port}\nMaxPDUSize = 131072\nMaxAssociations = 32\n"
            f"HostTable BEGIN\n{hosts}\nHostTable END\nVendorTable BEGIN\nVendorTable END\n"
            f"AETable BEGIN\n{self.aet} {self.storage} RW (200, 1024mb) ANY\nAETable END\n"
        )
        env = dict(os.environ, TCP_NODELAY="1")
        with (self.folder / "dcmqrscp.log").open("wb") as log:
            self.process = subprocess.Popen(
                [dcmtk("dcmqrscp"), "-c", str(config), str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        wait_for_echo(self.port, self.aet, process=self.process)
        return self

    def register(self, files: list[Path]) -> None:
        """Copy files into the storage folder and index them (no network)."""
        targets = []
        for file in files:
            target = self.storage / file.name
            shutil.copyfile(file, target)
            targets.append(str(target))
        subprocess.run([dcmtk("dcmqridx"), str(self.storage), *targets], check=True, timeout=300)

    def stop(self) -> None:
        terminate(self.process)
        self.process = None
