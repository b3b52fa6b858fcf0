"""The MongoDB store on pymongo."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pymongo
from pymongo import MongoClient, ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import (
    ConfigurationError,
    ConnectionFailure,
    InvalidURI,
    OperationFailure,
    PyMongoError,
)
from pymongo.write_concern import WriteConcern

from scheduler.errors import (
    ConfigError,
    PostNotFoundError,
    StoreError,
    StoreUnavailableError,
)
from scheduler.model import Attempt, Post, PostStatus
from scheduler.store.base import Store, SweepResult, lease_error, missed_error
from scheduler.urls import mask_url

logger = logging.getLogger(__name__)

DEFAULT_DATABASE = "postsched"
DEFAULT_SERVER_SELECTION_TIMEOUT_MS = 5_000
# Server error codes: https://www.mongodb.com/docs/manual/reference/error-codes/
MONGO_UNAUTHORIZED = 13
MONGO_AUTHENTICATION_FAILED = 18
MONGO_DUPLICATE_KEY = 11000
FIELDS = tuple(field for field in Post.__dataclass_fields__ if field != "id")


class DuplicatePostError(StoreError):
    """Raised when a post with the same id is already stored."""


class MongoStore(Store):
    """Posts in a MongoDB collection, ``_id`` being the post id.

    ``client`` replaces the client made from ``url``; tests pass a mongomock
    client. ``write_concern`` defaults to majority, so an acknowledged write
    survives a failover of the replica set.
    """

    def __init__(
        self,
        url: str,
        *,
        client: MongoClient[dict[str, Any]] | None = None,
        server_selection_timeout_ms: int = DEFAULT_SERVER_SELECTION_TIMEOUT_MS,
        write_concern: str | int = "majority",
    ) -> None:
        self._display_url = mask_url(url)
        try:
            self._client = (
                client
                if client is not None
                else MongoClient(
                    url,
                    tz_aware=True,
                    tzinfo=UTC,
                    serverSelectionTimeoutMS=server_selection_timeout_ms,
                )
            )
        except (InvalidURI, ConfigurationError, ValueError) as exc:
            raise ConfigError(
                f"invalid store URL {self._display_url!r}: {exc}; "
                "write it like mongodb://USER:PASSWORD@HOST:PORT/DATABASE"
            ) from exc
        database = self._client.get_default_database(default=DEFAULT_DATABASE)
        self._posts: Collection[dict[str, Any]] = database.get_collection(
            "posts", write_concern=WriteConcern(w=write_concern)
        )
        self._attempts: Collection[dict[str, Any]] = database.get_collection(
            "attempts", write_concern=WriteConcern(w=write_concern)
        )
        try:
            self._create_indexes()
        except BaseException:
            self._client.close()
            raise

    def _create_indexes(self) -> None:
        """Create the indexes that claims and sweeps use; a no-op when they exist."""
        try:
            with self._translate_errors("create indexes"):
                self._posts.create_index(
                    [("status", pymongo.ASCENDING), ("due_at", pymongo.ASCENDING)]
                )
                self._posts.create_index(
                    [("status", pymongo.ASCENDING), ("lease_until", pymongo.ASCENDING)]
                )
                self._attempts.create_index([("post_id", pymongo.ASCENDING)])
        except OperationFailure as exc:
            if exc.code in (MONGO_UNAUTHORIZED, MONGO_AUTHENTICATION_FAILED):
                raise ConfigError(
                    f"the store at {self._display_url} rejected the credentials: {exc}; "
                    "check the user, password and database in POSTSCHED_STORE_URL"
                ) from exc
            raise

    @property
    def display_url(self) -> str:
        """URL of the store with the password masked."""
        return self._display_url

    @contextmanager
    def _translate_errors(self, operation: str) -> Iterator[None]:
        try:
            yield
        except ConnectionFailure as exc:
            raise StoreUnavailableError(
                f"could not {operation} in the store at {self._display_url}: "
                f"{_without_topology(exc)}; "
                "check that MongoDB is running and POSTSCHED_STORE_URL is right"
            ) from exc

    def add(self, new_posts: Sequence[Post]) -> None:
        """Insert ``new_posts`` with one ``insert_many``; on any failure, remove them again.

        MongoDB has no all-or-nothing ``insert_many`` outside a transaction,
        and transactions need a replica set. So a failed batch is undone by
        deleting the posts it inserted, except any post that was changed in
        the meantime (a worker claimed it, for example), which the error names.
        """
        if not new_posts:
            return
        ids = [post.id for post in new_posts]
        repeated = sorted({post_id for post_id in ids if ids.count(post_id) > 1})
        if repeated:
            raise DuplicatePostError(
                f"post id(s) {', '.join(repeated)} given twice; nothing was added, so use new ids"
            )
        documents = [_to_document(post) for post in new_posts]
        with self._translate_errors("add posts"):
            stored_ids = self._stored_ids(ids)
            if stored_ids:
                raise DuplicatePostError(
                    f"post id(s) {', '.join(stored_ids)} already stored; nothing was added, so use new ids"
                )
            try:
                self._posts.insert_many(documents, ordered=True)
            except PyMongoError as exc:
                raise self._undo_add(new_posts, exc) from exc

    def _stored_ids(self, ids: list[str]) -> list[str]:
        """Return the ids in ``ids`` that are stored, sorted."""
        found = self._posts.find({"_id": {"$in": ids}}, {"_id": 1})
        return sorted(document["_id"] for document in found)

    def _undo_add(self, new_posts: Sequence[Post], exc: PyMongoError) -> StoreError:
        """Remove what a failed ``insert_many`` inserted; return the error to raise."""
        ids = [post.id for post in new_posts]
        # An ordered insert stops at the first error, so only the documents
        # before it were inserted. After other errors, such as a lost
        # connection, any of them may have been.
        details = getattr(exc, "details", None) or {}
        inserted = details.get("nInserted")
        added = new_posts[:inserted] if isinstance(inserted, int) else new_posts
        try:
            changed_ids = self._remove_unclaimed(added)
        except PyMongoError:
            outcome = (
                "removing the posts inserted before the failure failed too, so some may "
                f"remain; run 'postsched list' to check ids {', '.join(ids)}"
            )
        else:
            outcome = (
                f"post(s) {', '.join(changed_ids)} were changed, for example claimed by a worker, "
                "before they could be removed, so they stay"
                if changed_ids
                else "nothing was added"
            )

        write_errors = details.get("writeErrors") or [{}]
        first = write_errors[0]
        if first.get("code") == MONGO_DUPLICATE_KEY:
            duplicate = ids[first["index"]]
            return DuplicatePostError(
                f"post id {duplicate} already stored, so use new ids; {outcome}"
            )
        message = f"adding {len(ids)} post(s) to the store at {self._display_url} failed: {exc}; {outcome}"
        if isinstance(exc, ConnectionFailure):
            return StoreUnavailableError(message)
        return StoreError(message)

    def _remove_unclaimed(self, added: Sequence[Post]) -> list[str]:
        """Delete the posts in ``added`` that still look as inserted; return the other ids.

        A post counts as unchanged while its status and attempt count are the
        ones it was inserted with, because a claim changes both.
        """
        if not added:
            return []
        groups: dict[tuple[str, int], list[str]] = {}
        for post in added:
            groups.setdefault((str(post.status), post.attempts), []).append(post.id)
        unchanged = [
            {"_id": {"$in": group_ids}, "status": status, "attempts": attempts}
            for (status, attempts), group_ids in groups.items()
        ]
        self._posts.delete_many({"$or": unchanged})
        return self._stored_ids([post.id for post in added])

    def get(self, post_id: str) -> Post:
        """Return the post ``post_id``."""
        with self._translate_errors("read a post"):
            document = self._posts.find_one({"_id": post_id})
        if document is None:
            raise PostNotFoundError(post_id)
        return _from_document(document)

    def list_posts(
        self,
        *,
        status: PostStatus | None = None,
        target: str | None = None,
        ids: Sequence[str] | None = None,
        due_after: datetime | None = None,
        due_before: datetime | None = None,
        after: tuple[datetime, str] | None = None,
        limit: int | None = 100,
    ) -> list[Post]:
        """Return posts ordered by due time, then id."""
        _check_aware(due_after=due_after, due_before=due_before)
        query: dict[str, Any] = {}
        if status is not None:
            query["status"] = str(status)
        if target is not None:
            query["target"] = target
        if ids is not None:
            query["_id"] = {"$in": list(ids)}
        due_range: dict[str, datetime] = {}
        if due_after is not None:
            due_range["$gte"] = due_after
        if due_before is not None:
            due_range["$lt"] = due_before
        if due_range:
            query["due_at"] = due_range
        if after is not None:
            last_due_at, last_id = after
            _check_aware(after=last_due_at)
            query["$or"] = [
                {"due_at": {"$gt": last_due_at}},
                {"due_at": last_due_at, "_id": {"$gt": last_id}},
            ]
        with self._translate_errors("list posts"):
            cursor = self._posts.find(query).sort(
                [("due_at", pymongo.ASCENDING), ("_id", pymongo.ASCENDING)]
            )
            if limit is not None:
                cursor = cursor.limit(limit)
            return [_from_document(document) for document in cursor]

    def _update_if(
        self, post_id: str, allowed: set[PostStatus], changes: dict[str, Any]
    ) -> Post | None:
        _check_aware(**changes)
        with self._translate_errors("update a post"):
            document = self._posts.find_one_and_update(
                {
                    "_id": post_id,
                    "status": {"$in": [str(status) for status in allowed]},
                },
                {"$set": changes},
                return_document=ReturnDocument.AFTER,
            )
        return None if document is None else _from_document(document)

    def begin_delivery(self, post_id: str, attempt_id: str) -> Post | None:
        """Count one more delivery of a claimed post; None unless claimed under ``attempt_id``."""
        with self._translate_errors("count a delivery"):
            document = self._posts.find_one_and_update(
                {
                    "_id": post_id,
                    "status": str(PostStatus.PUBLISHING),
                    "attempt_id": attempt_id,
                },
                {"$inc": {"deliveries": 1}},
                return_document=ReturnDocument.AFTER,
            )
        return None if document is None else _from_document(document)

    def add_attempt(self, attempt: Attempt) -> None:
        """Record one attempt to publish a post."""
        with self._translate_errors("record an attempt"):
            self._attempts.insert_one(dict(vars(attempt)))

    def list_attempts(self, post_id: str) -> list[Attempt]:
        """Return the recorded attempts of a post, oldest first."""
        with self._translate_errors("list attempts"):
            documents = list(
                self._attempts.find({"post_id": post_id}).sort(
                    "started_at", pymongo.ASCENDING
                )
            )
        found = []
        for document in documents:
            document.pop("_id", None)
            document["started_at"] = _utc(document["started_at"])
            found.append(Attempt(**document))
        return found

    def claim_due(
        self, now: datetime, limit: int, attempt_id: str, lease_until: datetime
    ) -> list[Post]:
        """Claim up to ``limit`` due posts, earliest first.

        The ids are read first, then claimed by one ``update_many`` whose
        filter repeats the due condition. MongoDB updates each document
        atomically, so when two claimers pick the same id, only the first
        update matches it and the second finds it publishing. Each claimer
        then reads back the posts that carry its own ``attempt_id``.
        """
        _check_aware(now=now, lease_until=lease_until)
        due: dict[str, Any] = {
            "status": str(PostStatus.SCHEDULED),
            "due_at": {"$lte": now},
        }
        with self._translate_errors("claim due posts"):
            candidates = [
                document["_id"]
                for document in self._posts.find(due, {"_id": 1})
                .sort("due_at", pymongo.ASCENDING)
                .limit(limit)
            ]
            if not candidates:
                return []
            # The filter checks due_at again, because a post rescheduled to a
            # later time after the read above must not be claimed early.
            self._posts.update_many(
                {"_id": {"$in": candidates}, **due},
                {
                    "$set": {
                        "status": str(PostStatus.PUBLISHING),
                        "attempt_id": attempt_id,
                        "lease_until": lease_until,
                        "updated_at": now,
                    },
                    "$inc": {"attempts": 1},
                },
            )
            claimed = self._posts.find(
                {
                    "_id": {"$in": candidates},
                    "attempt_id": attempt_id,
                    "status": str(PostStatus.PUBLISHING),
                }
            ).sort([("due_at", pymongo.ASCENDING), ("_id", pymongo.ASCENDING)])
            return [_from_document(document) for document in claimed]

    def _settle(
        self, post_id: str, attempt_id: str, operation: str, changes: dict[str, Any]
    ) -> bool:
        _check_aware(**changes)
        with self._translate_errors(operation):
            result = self._posts.update_one(
                {
                    "_id": post_id,
                    "status": str(PostStatus.PUBLISHING),
                    "attempt_id": attempt_id,
                },
                {"$set": changes},
            )
        return result.modified_count == 1

    def sweep_expired(self, now: datetime, max_attempts: int) -> SweepResult:
        """Settle publishing posts whose lease ran out; each update is atomic per post."""
        _check_aware(now=now)
        expired: dict[str, Any] = {
            "status": str(PostStatus.PUBLISHING),
            "lease_until": {"$lt": now},
        }
        released = {"attempt_id": None, "lease_until": None, "updated_at": now}
        with self._translate_errors("sweep expired leases"):
            published = self._update_per_target(
                {**expired, "external_id": {"$ne": None}},
                {
                    "$set": {
                        "status": str(PostStatus.PUBLISHED),
                        "published_at": now,
                        **released,
                    }
                },
            )
            failed = self._update_per_target(
                {**expired, "attempts": {"$gte": max_attempts}},
                {
                    "$set": {
                        "status": str(PostStatus.FAILED),
                        "last_error": lease_error(max_attempts),
                        **released,
                    }
                },
            )
            rescheduled = self._posts.update_many(
                expired, {"$set": {"status": str(PostStatus.SCHEDULED), **released}}
            ).modified_count
        return SweepResult(
            rescheduled=rescheduled,
            failed=sum(failed.values()),
            published=sum(published.values()),
            failed_by_target=failed,
            published_by_target=published,
        )

    def _update_per_target(
        self, query: dict[str, Any], changes: dict[str, Any]
    ) -> dict[str, int]:
        """Apply ``changes`` to the posts matching ``query``; return how many per target.

        Each target's ``update_many`` repeats the query, so its count is exact
        even when another process changes some of the posts meanwhile.
        """
        updated: dict[str, int] = {}
        for target in self._posts.distinct("target", query):
            result = self._posts.update_many({**query, "target": target}, changes)
            if result.modified_count:
                updated[target] = int(result.modified_count)
        return updated

    def mark_missed(self, cutoff: datetime, now: datetime) -> dict[str, int]:
        """Set scheduled posts due before ``cutoff`` to ``missed``, one update per target."""
        _check_aware(cutoff=cutoff, now=now)
        # A post with deliveries may be out already: the next claim looks it up.
        overdue = {
            "status": str(PostStatus.SCHEDULED),
            "due_at": {"$lt": cutoff},
            "deliveries": {"$in": [0, None]},
        }
        changes = {
            "$set": {
                "status": str(PostStatus.MISSED),
                "last_error": missed_error(cutoff, now),
                "updated_at": now,
            }
        }
        with self._translate_errors("mark missed posts"):
            return self._update_per_target(overdue, changes)

    def next_due_at(self) -> datetime | None:
        """Return the due time of the earliest scheduled post."""
        with self._translate_errors("find the next due time"):
            document = self._posts.find_one(
                {"status": str(PostStatus.SCHEDULED)},
                {"due_at": 1},
                sort=[("due_at", pymongo.ASCENDING)],
            )
        return None if document is None else _utc(document["due_at"])

    def count_due(self, now: datetime) -> int:
        """Return the number of scheduled posts due at or before ``now``."""
        _check_aware(now=now)
        with self._translate_errors("count due posts"):
            return self._posts.count_documents(
                {"status": str(PostStatus.SCHEDULED), "due_at": {"$lte": now}}
            )

    def count_by_status(self) -> dict[PostStatus, int]:
        """Return the number of posts in each status."""
        with self._translate_errors("count posts"):
            rows = self._posts.aggregate(
                [{"$group": {"_id": "$status", "count": {"$sum": 1}}}]
            )
            return {PostStatus(row["_id"]): row["count"] for row in rows}

    def close(self) -> None:
        """Close the client."""
        self._client.close()


def _to_document(post: Post) -> dict[str, Any]:
    document: dict[str, Any] = {"_id": post.id}
    for field in FIELDS:
        document[field] = getattr(post, field)
    _check_aware(**document)
    document["status"] = str(post.status)
    return document


def _from_document(document: dict[str, Any]) -> Post:
    values: dict[str, Any] = {field: document.get(field) for field in FIELDS}
    for field, value in values.items():
        if isinstance(value, datetime):
            values[field] = _utc(value)
    values["status"] = PostStatus(values["status"])
    return Post(id=document["_id"], **values)


def _check_aware(**values: Any) -> None:
    # pymongo stores a naive datetime as if it were UTC, so a local time would
    # come back shifted. The SQL store rejects naive datetimes too.
    for name, value in values.items():
        if isinstance(value, datetime) and value.utcoffset() is None:
            raise ValueError(
                f"naive datetime {value.isoformat()} given to the store as {name}; "
                "pass a UTC-aware datetime"
            )


def _utc(value: datetime) -> datetime:
    # A client made without tz_aware (mongomock's default) returns naive UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _without_topology(exc: Exception) -> str:
    """Return the message of ``exc`` without the topology that server selection appends.

    A server selection timeout ends with a description of every known
    server, several lines long, which adds nothing for an operator.
    """
    message = str(exc).split(", Topology Description:")[0]
    return message.strip().splitlines()[0] if message.strip() else type(exc).__name__
