"""Outcome tables: bad data is refused with the row and column named."""
from pathlib import Path

import pytest

from router.cli import main
from router.offline.outcomes import OutcomeError, load_outcomes

GOOD = "prompt,small,small|total_cost,large,large|total_cost\nhi,1,0.1,1,1.0\nprove it,0,0.1,1,1.0\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "table.csv"
    path.write_text(text)
    return path


def test_good_table_gets_an_oracle_and_cost_order(tmp_path):
    table = load_outcomes(write(tmp_path, GOOD))
    assert table.models == ["small", "large"]
    assert table.frame["oracle_model_to_route_to"].tolist() == ["small", "large"]


def test_missing_score_column(tmp_path):
    with pytest.raises(OutcomeError, match="missing column 'large'"):
        load_outcomes(write(tmp_path, "prompt,small,small|total_cost,large|total_cost\nhi,1,0.1,1.0\n"))


def test_missing_prompt_column(tmp_path):
    with pytest.raises(OutcomeError, match="missing column 'prompt'"):
        load_outcomes(write(tmp_path, "text,a,a|total_cost\nhi,1,0.1\n"))


def test_non_numeric_score_names_row_and_column(tmp_path):
    with pytest.raises(OutcomeError, match=r"row 2 \(file line 3\), column 'small': 'yes' is not a number"):
        load_outcomes(write(tmp_path, GOOD.replace("prove it,0,", "prove it,yes,")))


def test_score_out_of_range(tmp_path):
    with pytest.raises(OutcomeError, match=r"row 1 .* column 'large': .* not a number in \[0, 1\]"):
        load_outcomes(write(tmp_path, GOOD.replace("hi,1,0.1,1,", "hi,1,0.1,7,")))


def test_unknown_model(tmp_path):
    with pytest.raises(OutcomeError, match="column 'small' names an unknown model"):
        load_outcomes(write(tmp_path, GOOD), known_models=["large"])


def test_not_a_csv(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(OutcomeError):
        load_outcomes(path)


def test_report_cli_refuses_a_bad_table(tmp_path, capsys):
    assert main(["report", "--data", str(write(tmp_path, GOOD.replace("0.1,1,1.0", "0.1,x,1.0"))),
                 "--out", str(tmp_path)]) == 2
    assert "column 'large'" in capsys.readouterr().err
