"""Slides for the pixel tests: known images written as DICOM WSI pyramids under given (real IDC) UIDs.

* ``slide_image(seed, width, height)``: a distinct, smooth RGB image per seed (numpy).
* ``sm_slide(out_dir, image, study, series, ...)``: a TILED_FULL pyramid (uncompressed, one
  instance per level, via ``tests.support.data``'s SM writer), optionally with a THUMBNAIL instance.
* ``dicomizer_slide(out_dir, image, study, series, ...)``: a JPEG pyramid from OrthancWSIDicomizer.
* ``GoogleStandIn``: a local stand-in for a Google Healthcare store: an OAuth token endpoint for a
  service account (so real google-auth gets a real token), and DICOMweb forwarded to an Orthanc
  only with ``Authorization: Bearer <that token>`` (401 otherwise); or, with ``header=(name, value)``,
  only with that header (an API-key server such as the SIIM hackathon's).
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from .data import DICOMIZER, _code, _sm_instance, optical_path, records_from_files, specimen_description


def slide_image(seed: int, width: int = 384, height: int = 256) -> np.ndarray:
    """A smooth image that differs per seed: coloured gradients plus a few soft discs."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    base = rng.uniform(40, 215, 3)
    slope = rng.uniform(-0.5, 0.5, (3, 2))
    image = np.stack([base[c] + slope[c, 0] * (x - width / 2) * 200 / width + slope[c, 1] * (y - height / 2)
                      * 200 / height for c in range(3)], axis=-1)
    for _ in range(3):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(20, 80)
        colour = rng.uniform(0, 255, 3)
        weight = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))[..., None]
        image = image * (1 - weight) + colour * weight
    return np.clip(image, 0, 255).astype(np.uint8)


def _common(study: str, series: str, patient: str, objective_power: int) -> dict:
    return {
        "PatientID": patient, "PatientName": "Slide^Test", "PatientBirthDate": "", "PatientSex": "",
        "StudyInstanceUID": study, "SeriesInstanceUID": series, "FrameOfReferenceUID": generate_uid(),
        "StudyID": "S1", "StudyDate": "20240101", "StudyTime": "120000", "AccessionNumber": "",
        "ReferringPhysicianName": "", "Modality": "SM", "SeriesNumber": 1, "SeriesDescription": "test slide",
        "Manufacturer": "idc-cohort tests", "ContainerIdentifier": f"SLIDE-{series[-8:]}",
        "SpecimenLabelInImage": "NO", "BurnedInAnnotation": "NO", "FocusMethod": "AUTO",
        "ExtendedDepthOfField": "NO", "VolumetricProperties": "VOLUME", "AcquisitionDateTime": "20240101120000",
        "ContentDate": "20240101", "ContentTime": "120000", "LossyImageCompression": "00",
        "PositionReferenceIndicator": "SLIDE_CORNER", "IssuerOfTheContainerIdentifierSequence": [],
        "ContainerTypeCodeSequence": [_code("433466003", "SCT", "Microscope slide")],
        "AcquisitionContextSequence": [], "SpecimenDescriptionSequence": [specimen_description()],
        "OpticalPathSequence": [optical_path(objective_power=objective_power)], "NumberOfOpticalPaths": 1,
    }


def sm_slide(out_dir: Path, image: np.ndarray, study: str, series: str, *, levels: int = 2, tile: int = 128,
             thumbnail: int | None = None, patient: str = "SLIDE-TEST", objective_power: int = 40) -> list[Path]:
    """Write a TILED_FULL pyramid of ``image`` (level n: every 2**n-th pixel); with ``thumbnail=W`` also a
    single-frame THUMBNAIL instance of ``image`` scaled to width W (Pillow, LANCZOS). Returns the files."""
    from PIL import Image

    folder = Path(out_dir) / series
    folder.mkdir(parents=True, exist_ok=True)
    common = _common(study, series, patient, objective_power)
    paths = []
    for level in range(levels):
        step = 2 ** level
        ds = _sm_instance(image[::step, ::step], tile, level, common, 0.00025 * step)
        paths.append(folder / f"level{level}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    if thumbnail:
        height = round(image.shape[0] * thumbnail / image.shape[1])
        small = np.asarray(Image.fromarray(image).resize((thumbnail, height), Image.Resampling.LANCZOS))
        ds = _sm_instance(small, max(thumbnail, height), levels, common, 0.00025 * image.shape[1] / thumbnail)
        ds.ImageType = ["DERIVED", "PRIMARY", "THUMBNAIL", "RESAMPLED"]
        paths.append(folder / "thumbnail.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


def dicomizer_slide(out_dir: Path, image: np.ndarray, study: str, series: str, tile: int = 256) -> list[Path]:
    """A JPEG pyramid of ``image`` from OrthancWSIDicomizer (the image is given to it as a lossless PNG)."""
    from PIL import Image

    binary = shutil.which(DICOMIZER)
    if binary is None:
        raise FileNotFoundError(f"{DICOMIZER} not found: run tests/install-orthanc.sh")
    out_dir = Path(out_dir)
    folder = out_dir / f"dicomizer-{series}"
    folder.mkdir(parents=True, exist_ok=True)
    source = out_dir / f"{series}.png"
    Image.fromarray(image).save(source)
    dataset = {"PatientID": "DICOMIZER", "StudyInstanceUID": study, "SeriesInstanceUID": series,
               "ImageType": "ORIGINAL\\PRIMARY\\VOLUME\\NONE", "Modality": "SM"}
    (out_dir / f"{series}.json").write_text(json.dumps(dataset))
    subprocess.run([binary, "--pyramid=1", "--compression=jpeg", "--jpeg-quality=95", f"--tile-width={tile}",
                    f"--tile-height={tile}", "--max-size=0", f"--dataset={out_dir / f'{series}.json'}",
                    f"--folder={folder}", str(source)], check=True, capture_output=True, timeout=120)
    return sorted(folder.glob("*.dcm"))


class GoogleStandIn:
    """A Google Healthcare store stand-in on 127.0.0.1: ``/token`` (OAuth2 JWT-bearer grant) and
    ``/dicomWeb/...`` forwarded to ``upstream_dicomweb`` only with the bearer token it issued.

    ``credentials_file(path)`` writes a service-account JSON (fresh RSA key) whose ``token_uri`` is
    this server. ``log`` lists (path, authorised) per DICOMweb request; ``tokens_issued`` counts grants.
    """

    def __init__(self, upstream_dicomweb: str, header: tuple[str, str] | None = None) -> None:
        self.upstream = upstream_dicomweb.rstrip("/")
        self.token = "standin-" + secrets.token_hex(16)
        #: the (name, value) a request must carry; default the bearer token this server issues
        self.header = header
        self.log: list[tuple[str, bool]] = []
        self.tokens_issued = 0
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicomWeb"

    def credentials_file(self, path: Path) -> Path:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
        info = {"type": "service_account", "project_id": "standin", "private_key_id": "1", "private_key": pem,
                "client_email": "tests@standin.iam.gserviceaccount.com", "client_id": "1",
                "token_uri": f"{self.url}/token"}
        path.write_text(json.dumps(info))
        return path

    def start(self) -> GoogleStandIn:
        import requests

        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != "/token":
                    self._send(404, b"", {})
                    return
                standin.tokens_issued += 1
                body = json.dumps({"access_token": standin.token, "expires_in": 3600, "token_type": "Bearer"})
                self._send(200, body.encode(), {"Content-Type": "application/json"})

            def do_GET(self) -> None:
                name, value = standin.header or ("Authorization", f"Bearer {standin.token}")
                authorised = self.headers.get(name) == value
                standin.log.append((self.path, authorised))
                if not self.path.startswith("/dicomWeb/"):
                    self._send(404, b"", {})
                elif not authorised:
                    self._send(401, b'{"error": "bearer token required"}', {"Content-Type": "application/json"})
                else:
                    headers = {k: v for k, v in self.headers.items() if k.lower() in ("accept", "range")}
                    answer = requests.get(standin.upstream + self.path.removeprefix("/dicomWeb"), headers=headers,
                                          timeout=60)
                    keep = {k: v for k, v in answer.headers.items() if k.lower() == "content-type"}
                    self._send(answer.status_code, answer.content, keep)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> GoogleStandIn:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


__all__ = ["GoogleStandIn", "dicomizer_slide", "records_from_files", "slide_image", "sm_slide"]
