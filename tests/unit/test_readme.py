"""The README's pure example runs as written."""

from tests.readme import python_block, python_blocks


def test_readme_has_its_examples() -> None:
    assert len(python_blocks()) >= 2


def test_the_thirty_line_entity_example_runs() -> None:
    block = python_blocks()[0]
    assert len(block.strip().splitlines()) <= 40
    namespace: dict[str, object] = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert "wallet" in namespace


def test_the_projection_example_counts_owners() -> None:
    from kes.schemas.bank.v1.bank_pb2 import AccountOpened
    from kes.schemas.codec import pack
    from kes.schemas.kes.v1.envelopes_pb2 import EventEnvelope
    from kes.stores.readmodels import MemoryReadModelStore
    from kes.streams.projections.rows import RowBatch

    namespace: dict[str, object] = {}
    exec(compile(python_block('Projection("owner-count"'), "README.md", "exec"), namespace)
    totals = namespace["totals"]
    rows = RowBatch(MemoryReadModelStore())
    for entity in ("a", "b"):
        payload = AccountOpened(owner="ann")
        event = EventEnvelope(entity_id=entity, revision=1, payload=pack(payload))
        totals.apply(event, payload, rows)  # type: ignore[attr-defined]
    assert rows.get("ann") == b"2"


def test_the_process_manager_example_runs() -> None:
    block = python_block("given_process")
    assert "given_process" in block
    namespace: dict[str, object] = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert "flow" in namespace


def test_the_durable_state_example_runs() -> None:
    namespace: dict[str, object] = {}
    exec(compile(python_block('DurableStateBehavior("card"'), "README.md", "exec"), namespace)
    assert "card" in namespace
