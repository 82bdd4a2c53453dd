"""Helpers shared by the command-line tests: failing commands and the benchmark table."""

from tvm_onednn.cli.main import main


def fails(argv, capsys, *needles, code=2):
    """Run ``argv``; it must fail with ``code`` and one ``tvm-onednn <cmd>: error:`` line on
    stderr holding every ``needle``, and no traceback. Returns that line."""
    assert main([str(a) for a in argv]) == code
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "Traceback" not in err and "Traceback" not in captured.out
    assert len(err.splitlines()) == 1, err  # one message
    assert err.startswith(f"tvm-onednn {argv[0]}: error:"), err
    for needle in needles:
        assert needle in err, err
    return err


def table_rows(printed: str) -> dict[tuple[str, int], list[str]]:
    """The benchmark table's rows, keyed by (system, batch)."""
    rows = {}
    for line in printed.splitlines():
        parts = line.split()
        if len(parts) == 7 and parts[1].isdigit() and parts[2].replace(".", "").isdigit():
            rows[parts[0], int(parts[1])] = parts
    return rows
