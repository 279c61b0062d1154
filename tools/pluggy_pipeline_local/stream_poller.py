"""Lambda's DynamoDB-stream event source mapping, played locally against moto's stream.

What AWS does for PublisherFunction (template.yaml, RecordsStream): read each shard in order, hand the
function up to `batch_size` records in Lambda's event shape, and move the shard's checkpoint only past what the
function reports as handled. A raised error leaves the checkpoint where it was (the batch comes again); a
`batchItemFailures` entry moves it to just before the reported record. The checkpoint may live in a file, so a
poller killed mid-batch and started again resumes where the last handled record ended, as Lambda does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Mapping[str, Any] | None]


def lambda_record(record: Mapping[str, Any], stream_arn: str) -> dict[str, Any]:
    """A stream record as Lambda delivers it (epoch seconds, the source ARN), not as GetRecords returns it."""
    body = dict(record["dynamodb"])
    created = body.get("ApproximateCreationDateTime")
    if isinstance(created, datetime):
        body["ApproximateCreationDateTime"] = created.timestamp()
    return {**record, "dynamodb": body, "eventSourceARN": stream_arn}


class StreamPoller:
    def __init__(
        self,
        streams: Any,
        stream_arn: str,
        handler: Handler,
        *,
        batch_size: int = 100,
        checkpoint_file: Path | None = None,
    ) -> None:
        self._streams = streams
        self._arn = stream_arn
        self._handler = handler
        self._batch_size = batch_size
        self._file = checkpoint_file
        self._checkpoints: dict[str, str] = {}
        if checkpoint_file is not None and checkpoint_file.exists():
            self._checkpoints = json.loads(checkpoint_file.read_text(encoding="utf-8"))
        self.invocations = 0
        self.failures = 0

    @property
    def checkpoints(self) -> dict[str, str]:
        return dict(self._checkpoints)

    def _save(self, shard: str, sequence: str) -> None:
        self._checkpoints[shard] = sequence
        if self._file is not None:
            temporary = self._file.with_suffix(".tmp")
            temporary.write_text(json.dumps(self._checkpoints), encoding="utf-8")
            temporary.replace(self._file)  # atomic: a kill never leaves half a checkpoint

    def _records(self, shard: str) -> list[dict[str, Any]]:
        after = self._checkpoints.get(shard)
        position: dict[str, Any] = (
            {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": after}
            if after
            else {"ShardIteratorType": "TRIM_HORIZON"}
        )
        iterator = self._streams.get_shard_iterator(StreamArn=self._arn, ShardId=shard, **position)["ShardIterator"]
        records: list[dict[str, Any]] = self._streams.get_records(ShardIterator=iterator, Limit=self._batch_size)[
            "Records"
        ]
        return records

    def poll_once(self) -> int:
        """One batch per shard; the number of records now behind the checkpoint."""
        handled = 0
        shards = self._streams.describe_stream(StreamArn=self._arn)["StreamDescription"]["Shards"]
        for shard in (s["ShardId"] for s in shards):
            records = self._records(shard)
            if not records:
                continue
            batch = [lambda_record(r, self._arn) for r in records]
            self.invocations += 1
            try:
                answer = self._handler({"Records": batch}) or {}
            except Exception:  # a failed invocation: the checkpoint stays, the batch comes again
                self.failures += 1
                log.exception("stream handler failed; the batch will be retried")
                continue
            failures = [f.get("itemIdentifier") for f in answer.get("batchItemFailures", [])]
            sequences = [r["dynamodb"]["SequenceNumber"] for r in records]
            if failures:
                self.failures += 1
                first = min(sequences.index(f) for f in failures if f in sequences)
                if first > 0:
                    self._save(shard, sequences[first - 1])
                handled += first
            else:
                self._save(shard, sequences[-1])
                handled += len(records)
        return handled

    def drain(self, *, max_polls: int = 1000) -> int:
        """Poll until a pass finds nothing new (bounded); the records handled."""
        total = 0
        for _ in range(max_polls):
            handled = self.poll_once()
            total += handled
            if handled == 0:
                return total
        raise RuntimeError(f"stream not drained after {max_polls} polls")
