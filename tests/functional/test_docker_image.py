"""The Docker image, checked without Docker: its entry command as a non-root user in a venv.

The test reads the Dockerfile and plays it on the host: the build stage's COPY lines make the
build context (so a file the image needs but does not copy fails here), `pip install .` goes into
a fresh venv; the runtime stage's ENV, VOLUME, WORKDIR, CMD and HEALTHCHECK run as `nobody`
(setpriv) with image paths mapped under a temporary root whose other directories belong to root.
Dependencies come from the test environment (a .pth line); only pip's build of the project may
fetch its build backend, as `pip install .` does in the image.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.conftest import free_port
from tests.conftest import fresh_postgres
from tests.conftest import token_for

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOBODY = 65534
DOCKER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv"),
]


def instructions(text: str) -> list[list[tuple[str, str]]]:
    """The Dockerfile's stages, each a list of (INSTRUCTION, arguments)."""
    joined = re.sub(r"\\\n\s*", " ", text)
    stages: list[list[tuple[str, str]]] = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            stages.append([])
        stages[-1].append((word.upper(), rest.strip()))
    return stages


def env_pairs(args: str, env: dict[str, str]) -> dict[str, str]:
    """ENV KEY=VALUE ... with $NAME expanded from what is set so far."""
    out = {}
    for pair in shlex.split(args):
        key, _, value = pair.partition("=")
        out[key] = re.sub(r"\$(\w+)", lambda m: env.get(m.group(1), ""), value)
    return out


@pytest.fixture(scope="module")
def image() -> Iterator[dict[str, Any]]:
    """The Dockerfile played into a temporary root: venv, data volume, environment, commands."""
    build, runtime = instructions((ROOT / "Dockerfile").read_text())[-2:]
    top = pathlib.Path(tempfile.mkdtemp(prefix="rehabfhir-image-"))
    top.chmod(0o755)  # like /: everyone may traverse, only root may write
    umask = os.umask(0o022)  # as in a docker build, whatever this shell's umask is
    try:
        played = _play(build, runtime, top)
    finally:
        os.umask(umask)
    try:
        yield played
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _play(build: list[tuple[str, str]], runtime: list[tuple[str, str]], top: pathlib.Path) -> dict[str, Any]:
    def inside(path: str) -> str:
        return str(top / path.lstrip("/")) if path.startswith("/") else path

    def in_path(path: str) -> str:  # the image's own directories on PATH, the system's left alone
        return inside(path) if path.startswith("/opt/") else path

    context = top / "src"
    context.mkdir()
    for word, args in build:
        if word == "COPY":
            *sources, dest = shlex.split(args)
            for source in sources:
                target = context / dest / source if dest.endswith("/") else context / dest
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy(ROOT / source, target)
    venv = re.search(r"python -m venv (\S+)", " ".join(a for w, a in build if w == "RUN"))
    assert venv, "the build stage makes a venv"
    prefix = pathlib.Path(inside(venv.group(1)))
    subprocess.run([system_python(), "-m", "venv", "--without-pip", str(prefix)], check=True)
    (packages,) = prefix.glob("lib/python*/site-packages")
    (packages / "test-dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(prefix / "bin" / "python"), "install", "-q"]
        + ["--no-deps", str(context)],
        check=True,
    )

    env: dict[str, str] = {"PATH": DOCKER_PATH}
    image: dict[str, Any] = {"top": top}
    for word, args in runtime:
        if word == "ENV":
            env.update(env_pairs(args, env))
        elif word == "VOLUME":
            for volume in json.loads(args):
                image["volume"] = pathlib.Path(inside(volume))
        elif word == "WORKDIR":
            image["workdir"] = inside(args)
        elif word == "USER":
            image["user"] = args
        elif word == "CMD":
            image["cmd"] = json.loads(args)
        elif word == "HEALTHCHECK":
            image["healthcheck"] = args.split(" CMD ", 1)[1]
    env = {k: ":".join(map(in_path, v.split(":"))) if k == "PATH" else inside(v) for k, v in env.items()}
    # The RUN line that creates and hands over the volume: its directories, owned by the user.
    run = " ".join(a for w, a in runtime if w == "RUN")
    for made in re.findall(r"mkdir -p ([^&]+)", run):
        for path in made.split():
            pathlib.Path(inside(path)).mkdir(parents=True, exist_ok=True)
    assert image["user"] != "root" and f"chown -R {image['user']}" in run
    for path in [image["volume"], *image["volume"].rglob("*")]:
        os.chown(path, NOBODY, NOBODY)
    image["env"] = env
    return image


def system_python() -> str:
    """A Python of this version that `nobody` can run (a venv's base may sit under root's home)."""
    name = "python{}.{}".format(*sys.version_info[:2])
    for directory in ("/usr/local/bin", "/usr/bin"):
        path = os.path.join(directory, name)
        if (
            os.path.exists(path)
            and subprocess.run(as_nobody(["sh", "-c", f"{path} -c pass"])).returncode == 0
        ):
            return path
    pytest.skip(f"no {name} that a non-root user can run")


def as_nobody(cmd: list[str]) -> list[str]:
    return [
        shutil.which("setpriv") or "setpriv",
        f"--reuid={NOBODY}",
        f"--regid={NOBODY}",
        "--clear-groups",
        "--",
        *cmd,
    ]


def test_the_image_entry_command_serves_and_exports_as_a_non_root_user(image: dict[str, Any]) -> None:
    env = dict(image["env"], REHABFHIR_SECRET_KEY="image-test-secret", HOME=str(image["volume"]))
    assert env["REHABFHIR_MODE"] == "production"
    env["PORT"] = str(free_port())
    env["WEB_CONCURRENCY"] = "1"
    export_dir = pathlib.Path(env["REHABFHIR_EXPORT_DIR"])
    witness = pathlib.Path(env["REHABFHIR_AUDIT_WITNESS"])
    assert image["volume"] in export_dir.parents and image["volume"] in witness.parents
    base = f"http://127.0.0.1:{env['PORT']}"
    with fresh_postgres() as database_url:
        env["DATABASE_URL"] = database_url
        log = tempfile.TemporaryFile()
        proc = subprocess.Popen(
            as_nobody(image["cmd"]),
            env=env,
            cwd=image["workdir"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_healthy(proc, base, log)
            check = subprocess.run(as_nobody(["sh", "-c", image["healthcheck"]]), env=env, timeout=30)
            assert check.returncode == 0, "the image's HEALTHCHECK fails"
            ready = requests.get(base + "/readyz", timeout=10)
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"]["export_dir"] == "ok"
            _export_patients(base, database_url, export_dir)
            assert witness.exists() and witness.stat().st_uid == NOBODY  # the audit witness: in the volume
        finally:
            _stop(proc)
            log.close()
    # The server ran from the venv, not from the checkout, and wrote nothing outside its volume.
    written = [p for p in image["top"].rglob("*") if p.stat().st_uid == NOBODY]
    assert written and all(image["volume"] in p.parents or p == image["volume"] for p in written)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the server's process group (gunicorn and its workers): TERM, then KILL after 20 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_healthy(proc: subprocess.Popen[bytes], base: str, log: Any) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            pytest.fail("the entry command exited: " + log.read().decode(errors="replace")[-3000:])
        try:
            if requests.get(base + "/healthz", timeout=5).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):
            # Not listening yet, or listening while its workers still boot (a loaded machine).
            pass
        time.sleep(0.1)
    pytest.fail("no /healthz answer within 120 s")


def _export_patients(base: str, database_url: str, export_dir: pathlib.Path) -> None:
    auth = {"Authorization": "Bearer " + token_for(base, database_url)}
    fhir = {**auth, "Content-Type": "application/fhir+json"}
    r = requests.post(base + "/Patient", json={"resourceType": "Patient"}, headers=fhir, timeout=30)
    assert r.status_code == 201, r.text
    r = requests.get(base + "/$export?_type=Patient", headers={**auth, "Prefer": "respond-async"}, timeout=30)
    assert r.status_code == 202, r.text
    status = base + "/" + r.headers["Content-Location"].split("/", 3)[3]
    for _ in range(300):
        r = requests.get(status, headers=auth, timeout=30)
        if r.status_code == 200:
            break
        assert r.status_code == 202, r.text
        time.sleep(0.1)
    assert r.status_code == 200, "export not done in 30 s"
    assert [o["type"] for o in r.json()["output"]] == ["Patient"]
    files = [p for p in export_dir.rglob("*") if p.is_file()]
    assert files and all(p.stat().st_uid == NOBODY for p in files)
