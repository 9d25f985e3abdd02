"""The README's pure example runs as written."""

from tests.readme import python_blocks


def test_readme_has_its_examples() -> None:
    assert len(python_blocks()) >= 2


def test_the_thirty_line_entity_example_runs() -> None:
    block = python_blocks()[0]
    assert len(block.strip().splitlines()) <= 40
    namespace: dict[str, object] = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert "wallet" in namespace
