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


def test_the_schema_evolution_example_migrates_states_and_adapts_events() -> None:
    from kes.schemas.codec import pack, unpack
    from kes.schemas.evolution.v1.evolution_pb2 import Deposit, Deposited, DepositedV2, WalletV1
    from kes.schemas.kes.v1.envelopes_pb2 import EventEnvelope
    from kes.streams.core.adapters import VERSION_KEY
    from kes.streams.core.testkit import given

    namespace: dict[str, object] = {}
    exec(compile(python_block("migrate_state"), "README.md", "exec"), namespace)
    wallet, adapters = namespace["wallet"], namespace["EVENT_ADAPTERS"]
    migrated = wallet.load_state(pack(WalletV1(balance=3, deposits=1)), 1)  # type: ignore[attr-defined]
    assert (migrated.balance_cents, migrated.currency, migrated.deposits) == (300, "EUR", 1)
    old = adapters.adapt(EventEnvelope(payload=pack(Deposited(amount=2))))  # type: ignore[attr-defined]
    assert unpack(old.payload) == DepositedV2(amount_cents=200, currency="EUR")
    assert wallet.event_version(DepositedV2.DESCRIPTOR.full_name) == 2  # type: ignore[attr-defined]
    assert VERSION_KEY == "schema-version"
    given(wallet, "w-1", [DepositedV2(amount_cents=1, currency="EUR")]).when(  # type: ignore[arg-type]
        Deposit(amount=5)
    ).then(DepositedV2(amount_cents=5, currency="EUR"))
    old_history = given(wallet, "w-1", [Deposited(amount=5)], adapters=adapters)  # type: ignore[arg-type]
    assert old_history.state.balance_cents == 500  # type: ignore[attr-defined]
    wallet.check_state_migrations()  # type: ignore[attr-defined]
