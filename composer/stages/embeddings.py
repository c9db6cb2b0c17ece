"""Post transforms that make sentence embeddings useful: pooling, routing, search, de-duplication.

`mean_pool` turns the feature-extraction pipeline's token states into one L2-normalised vector
per record, the sentence-transformers recipe: the mean over the tokens the attention mask keeps,
then normalisation (composer.stages.pooling; `mode` picks max, cls or mean_sqrt_len pooling
instead). When it reads the model stage's output and nothing else does, the plan hands the
pooling to the model stage, which pools each record's states while they are still the batch's
tensors (no tokens x hidden floats as JSON lists in between); the stage then passes the vector
on. The tests check both against the recipe computed by hand on a padded batch.

The other stages read that vector (`embedding`):
- `embedding_classify`: labels described in the config; each record gets every label with the
  cosine similarity of its embedding to the label's description (zero-shot by embeddings), in
  the zero-shot pipeline's shape `{labels, scores}`, best first, so `top_k`, `threshold` and the
  quality metrics work on it unchanged.
- `semantic_search`: each record against a fixed list (`queries` in the config, or a `corpus`
  file): the k most similar entries with their scores.
- `near_duplicates`: groups records whose similarity reaches a threshold. It needs all records,
  and the graph streams them: so each record is compared with every *earlier* record, kept in
  memory (n x hidden floats; n^2/2 comparisons), and joins the group of its most similar earlier
  record. The result of a record depends only on the records before it in input order, never on
  batching, and is final when the record is written. A resumed run first re-reads the records
  already written (restore), so it groups the rest as an uninterrupted run would.

The texts in the config (label descriptions, queries, corpus) are embedded at setup by the same
model and pooling as the records, through a feature-extraction pipeline of its own: give these
stages `model: ${model}` (and `call: ${call}`) so they use exactly the main model's settings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from composer.records import Record, canonical_json, to_jsonable
from composer.stages.base import Stage, require_field
from composer.stages.pooling import check_mode, pool

FEATURE_EXTRACTION = "feature-extraction"


def l2_normalize(vector: Any) -> Any:
    """vector / max(||vector||, 1e-12), as torch.nn.functional.normalize does."""
    import numpy as np

    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def _vector(record: Record, field: str, stage: str) -> Any:
    import numpy as np

    vector = np.asarray(require_field(record, field, stage), dtype=np.float64)
    if vector.ndim != 1 or vector.size == 0:
        raise ValueError(f"field {field!r} of record {record.get('id')!r} is not a flat vector (run mean_pool first)")
    return l2_normalize(vector)


class MeanPool(Stage):
    """Mean pooling + L2 normalisation of feature-extraction output into one vector per record."""

    def __init__(
        self,
        name: str,
        *,
        field: str = "prediction",
        output_field: str = "embedding",
        normalize: bool = True,
        keep_input: bool = False,
        task: str | None = None,
        mode: str = "mean",
    ):
        # `task` (set it to ${task}) turns a config that pools some other task's output into a
        # plan-time error instead of one failed record per input.
        if task is not None and task != FEATURE_EXTRACTION:
            raise ValueError(
                f"mean_pool pools feature-extraction output, but the task is {task!r}: set task=feature-extraction, "
                "or choose an experiment without embedding stages (experiment=base is the plain base config; "
                "the default, support-tickets, routes tickets by embeddings)"
            )
        check_mode(mode)
        super().__init__(name)
        self.field, self.output_field, self.normalize, self.keep_input = field, output_field, normalize, keep_input
        self.mode = mode
        self.reads, self.writes = (field,), (output_field,)
        self.pooled_by: str | None = None  # the model stage that pools for this one (plan._pool_in_model)

    def pooling(self) -> dict[str, Any]:
        """What pool() is called with: the settings a model stage takes over from this one."""
        return {"mode": self.mode, "normalize": self.normalize}

    def pooled_upstream(self, model_stage: str) -> None:
        """`model_stage` now hands on pooled vectors: pass them on instead of pooling again."""
        self.pooled_by = model_stage

    def describe(self) -> dict[str, Any]:
        return {"pooled_by": self.pooled_by}  # null: pooled here, from token states

    def plan_note(self) -> str | None:
        return f"pooled by {self.pooled_by}: passes its vectors on" if self.pooled_by else None

    def fields_after(self, available: set[str]) -> set[str]:
        # The token states are large (tokens x hidden floats); they leave the record once pooled.
        dropped = set() if self.keep_input or self.field == self.output_field else {self.field}
        return (available - dropped) | {self.output_field}

    def process(self, records: list[Record]) -> list[Record]:
        values = [require_field(r, self.field, self.name) for r in records]
        pooled = values if self.pooled_by else [to_jsonable(pool(value, **self.pooling())) for value in values]
        for record, vector in zip(records, pooled):
            if not self.keep_input:
                record.pop(self.field, None)
            record[self.output_field] = vector
        return records


class Encoder:
    """Embeds the texts a stage's config holds, exactly as the records are: the same model through a
    feature-extraction pipeline, then mean pooling and normalisation."""

    def __init__(self, owner: str, model: dict, call: dict | None, batch_size: int):
        from composer.stages.model import PipelineStage

        self.stage = PipelineStage(f"{owner}.encoder", task=FEATURE_EXTRACTION, model=dict(model), call=dict(call or {}),
                                   input_field="text", output_field="vector", batch_size=batch_size,
                                   pooling={"mode": "mean", "normalize": True})

    def setup(self) -> None:
        self.stage.setup()

    def encode(self, texts: list[str]) -> Any:
        import numpy as np

        records = [{"id": str(i), "text": text} for i, text in enumerate(texts)]
        out = []
        for start in range(0, len(records), self.stage.batch_size):
            batch = self.stage.process(records[start:start + self.stage.batch_size])
            out += [record["vector"] for record in batch]
        return np.asarray(out, dtype=np.float64) if out else np.zeros((0, 0))

    def fingerprint(self) -> str:
        return self.stage.fingerprint()

    def describe(self) -> dict[str, Any]:
        facts = self.stage.describe()
        return {"encoder": {key: facts.get(key) for key in ("model", "dtype", "device", "load_seconds")}}

    def close(self) -> None:
        self.stage.close()


class _EncodingStage(Stage):
    """A stage that embeds texts from its config at setup; its fingerprint pins the encoder's weights."""

    output_neutral = frozenset({"batch_size"})

    def __init__(self, name: str, model: dict, call: dict | None, batch_size: int):
        if not isinstance(model, dict):
            raise ValueError("model must be a model config mapping; use `model: ${model}` for the main model's")
        super().__init__(name)
        self.encoder = Encoder(name, model, call, batch_size)

    def setup(self) -> None:
        self.encoder.setup()

    def fingerprint(self) -> str:
        payload = canonical_json({"stage": super().fingerprint(), "encoder": self.encoder.fingerprint(), "data": self._data_fingerprint()})
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]

    def _data_fingerprint(self) -> Any:
        return None

    def describe(self) -> dict[str, Any]:
        return self.encoder.describe()

    def close(self) -> None:
        self.encoder.close()


class EmbeddingClassify(_EncodingStage):
    """Zero-shot classification by embeddings: cosine similarity of the record to each label's description."""

    #: api.execute_config scores this stage's output against the gold labels (accuracy, F1).
    produces_labels = True

    def __init__(
        self,
        name: str,
        *,
        labels: dict[str, str | list[str]],
        model: dict,
        call: dict | None = None,
        field: str = "embedding",
        output_field: str = "prediction",
        batch_size: int = 32,
    ):
        if not isinstance(labels, dict) or not labels:
            raise ValueError("labels must map each label to a description (or a list of descriptions)")
        descriptions = {str(label): [text] if isinstance(text, str) else list(text) for label, text in labels.items()}
        for label, texts in descriptions.items():
            if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
                raise ValueError(f"label {label!r} needs a non-empty description")
        super().__init__(name, model, call, batch_size)
        self.descriptions, self.field, self.output_field = descriptions, field, output_field
        self.reads, self.writes = (field,), (output_field,)
        self.prototypes: Any = None

    def setup(self) -> None:
        import numpy as np

        super().setup()
        # A label with several descriptions is represented by their normalised mean (a prototype).
        self.prototypes = np.stack([l2_normalize(self.encoder.encode(texts).mean(axis=0)) for texts in self.descriptions.values()])

    def process(self, records: list[Record]) -> list[Record]:
        import numpy as np

        labels = list(self.descriptions)
        results = []
        for record in records:
            scores = self.prototypes @ _vector(record, self.field, self.name)
            order = np.argsort(-scores, kind="stable")
            results.append({"labels": [labels[i] for i in order], "scores": [float(scores[i]) for i in order]})
        for record, result in zip(records, results):
            record[self.output_field] = result
        return records


class SemanticSearch(_EncodingStage):
    """Top-k semantic search of each record against `queries` (a list in the config) or a `corpus` file."""

    def __init__(
        self,
        name: str,
        *,
        model: dict,
        queries: list | None = None,
        corpus: str | None = None,
        corpus_field: str = "text",
        corpus_id_field: str | None = None,
        k: int = 3,
        min_score: float | None = None,
        call: dict | None = None,
        field: str = "embedding",
        output_field: str = "matches",
        batch_size: int = 32,
    ):
        if (queries is None) == (corpus is None):
            raise ValueError("give either queries (a list of texts or {id, text} mappings) or corpus (a .jsonl or .txt file)")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if queries is not None and not (isinstance(queries, list) and queries):
            raise ValueError("queries must be a non-empty list")
        if corpus is not None and not Path(corpus).expanduser().is_file():
            raise ValueError(f"corpus file not found: {corpus}")
        super().__init__(name, model, call, batch_size)
        self.queries, self.corpus, self.corpus_field, self.corpus_id_field = queries, corpus, corpus_field, corpus_id_field
        self.k, self.min_score, self.field, self.output_field = k, min_score, field, output_field
        self.reads, self.writes = (field,), (output_field,)
        self.entries: list[dict[str, str]] = []
        self.matrix: Any = None

    def _data_fingerprint(self) -> Any:
        if self.corpus is None:
            return None
        return hashlib.sha256(Path(self.corpus).expanduser().read_bytes()).hexdigest()

    def _load_entries(self) -> list[dict[str, str]]:
        if self.queries is not None:
            rows: list[Any] = list(self.queries)
        else:
            path = Path(self.corpus).expanduser()
            lines = path.read_text(encoding="utf-8").splitlines()
            rows = [json.loads(line) for line in lines if line.strip()] if path.suffix == ".jsonl" else [l for l in lines if l.strip()]
        entries = []
        for index, row in enumerate(rows):
            if isinstance(row, str):
                entries.append({"id": str(index), "text": row})
                continue
            if not isinstance(row, dict) or not isinstance(row.get(self.corpus_field), str):
                raise ValueError(f"search entry {index} has no text field {self.corpus_field!r}: {row!r}")
            entry_id = row.get(self.corpus_id_field or "id", index)
            entries.append({"id": str(entry_id), "text": row[self.corpus_field]})
        return entries

    def setup(self) -> None:
        super().setup()
        self.entries = self._load_entries()
        self.matrix = self.encoder.encode([entry["text"] for entry in self.entries])

    def process(self, records: list[Record]) -> list[Record]:
        import numpy as np

        results = []
        for record in records:
            scores = self.matrix @ _vector(record, self.field, self.name)
            best = np.argsort(-scores, kind="stable")[: self.k]
            results.append([
                {**self.entries[i], "score": float(scores[i])}
                for i in best
                if self.min_score is None or scores[i] >= self.min_score
            ])
        for record, result in zip(records, results):
            record[self.output_field] = result
        return records


class NearDuplicates(Stage):
    """Streaming near-duplicate grouping: each record against every earlier record, kept in memory."""

    def __init__(self, name: str, *, threshold: float = 0.9, field: str = "embedding", output_field: str = "near_duplicate"):
        if not -1.0 <= threshold <= 1.0:
            raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
        super().__init__(name)
        self.threshold, self.field, self.output_field = threshold, field, output_field
        self.reads, self.writes = (field,), (output_field,)
        self.ids: list[str] = []
        self.groups: list[str] = []
        self.vectors: Any = None  # rows 0..len(ids)-1 are the kept records; capacity doubles
        self.duplicates: list[dict[str, Any]] = []  # {id, duplicate_of, score} of each record that repeats one
        self.duplicate_groups: set[str] = set()

    # A record's group depends on every record before it, and a resumed run starts mid-input.
    restores_state = True

    def restore(self, written: Iterable[Record]) -> None:
        """Keep the records an earlier attempt wrote, with the groups it gave them, so a resumed
        run groups the rest exactly as an uninterrupted one would."""
        for record in written:
            if self.field not in record or not isinstance(record.get(self.output_field), dict):
                raise ValueError(
                    f"{self.name}: cannot resume: record {record.get('id')!r} in outputs.jsonl lacks {self.field!r} or "
                    f"{self.output_field!r}, which rebuild the records seen so far; start the run again in a new folder"
                )
            self._keep(_vector(record, self.field, self.name), str(record["id"]), record[self.output_field])

    def _keep(self, vector: Any, record_id: str, result: dict[str, Any]) -> None:
        import numpy as np

        count = len(self.ids)
        if self.vectors is None or count == len(self.vectors):
            grown = np.zeros((max(64, 2 * count), vector.shape[0]))
            if self.vectors is not None:
                grown[:count] = self.vectors
            self.vectors = grown
        self.vectors[count] = vector
        self.ids.append(record_id)
        self.groups.append(result["group"])
        if result["duplicate_of"] is not None:
            self.duplicates.append({"id": record_id, "duplicate_of": result["duplicate_of"], "score": result["score"]})
            self.duplicate_groups.add(result["group"])

    def describe(self) -> dict[str, Any]:
        """How many records repeat an earlier one, in how many groups, and the first few."""
        return {"near_duplicates": {"records": len(self.duplicates), "groups": len(self.duplicate_groups),
                                    "examples": self.duplicates[:3]}}

    def process(self, records: list[Record]) -> list[Record]:
        import numpy as np

        vectors = [_vector(record, self.field, self.name) for record in records]
        sizes = {v.shape[0] for v in vectors} | ({self.vectors.shape[1]} if self.ids else set())
        if len(sizes) > 1:
            raise ValueError(f"embeddings of different sizes {sorted(sizes)} cannot be compared")
        # Nothing can fail below, so nothing is kept from a batch that fails: it is retried
        # record by record, and its first records must not be kept twice.
        for record, vector in zip(records, vectors):
            result = {"group": str(record["id"]), "duplicate_of": None, "score": None}
            if self.ids:
                scores = self.vectors[: len(self.ids)] @ vector
                best = int(np.argmax(scores))
                if scores[best] >= self.threshold:
                    result = {"group": self.groups[best], "duplicate_of": self.ids[best], "score": float(scores[best])}
            self._keep(vector, str(record["id"]), result)
            record[self.output_field] = result
        return records
