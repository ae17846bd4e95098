"""The arithmetic behind committed evidence: erase-and-check's copies (bench/erase_and_check.py), the FLOPs a
decision costs (bench/encoder_roofline.py), the pooling of make bench's served-against-alone rounds
(bench/bench_router.py), the Mahalanobis out-of-distribution scores (bench/ood_detection.py),
the met / not-met columns of README's bench tables (bench/readme_tables.py) and the
selection gap on RouteLLM's benchmarks (bench/routellm_selection_gap.py), against hand-computed cases."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import readme_tables  # noqa: E402
from bench_router import pooled_rounds  # noqa: E402
from encoder_roofline import flops_per_decision  # noqa: E402
from ood_detection import mahalanobis_flags, mahalanobis_scores  # noqa: E402
from erase_and_check import erased  # noqa: E402
from readme_tables import main as readme_tables_main  # noqa: E402
from readme_tables import ratio_rows  # noqa: E402
from routellm_selection_gap import summarise  # noqa: E402


def test_erase_and_check_copies_drop_leading_words_up_to_the_depth_and_keep_three():
    assert erased("a b c d e f", depth=2) == ["a b c d e f", "b c d e f", "c d e f"]
    # a copy keeps at least 3 words, so a short prompt gets fewer copies than the depth
    assert erased("a b c d", depth=5) == ["a b c d", "b c d"]
    assert erased("a b", depth=3) == ["a b"]
    # the certificate: a prefix of at most `depth` words leaves the bare prompt among the copies
    assert "what is two plus two" in erased("x y z what is two plus two", depth=3)
    assert "what is two plus two" not in erased("w x y z what is two plus two", depth=3)


def test_flops_per_decision_counts_weight_products_per_token_and_attention_per_token_pair():
    # one 2x3 weight: 2*2*3 per token over 5 tokens = 60; two attention products of width 4: 2 * 2*5*4 * 5 = 400
    assert flops_per_decision([(2, 3)], attention_matmuls=2, width=4, tokens=5) == 60 + 400
    # MiniLM-L6's weights alone at 15 tokens: 6 layers of 4 384x384 and 384x1536 + 1536x384
    layer = [(384, 384)] * 4 + [(384, 1536), (1536, 384)]
    assert flops_per_decision(layer * 6, 0, 384, 15) == 2 * 6 * (4 * 384 * 384 + 2 * 384 * 1536) * 15


def test_readme_table_reads_each_goal_from_the_ratio_name_and_says_whether_this_run_met_it():
    rows = ratio_rows({"cold_start_s (goal <= 15)": 15.7, "pss_gib (goal <= 4)": 4.0, "route_p50_via_proxy": 2.87,
                       "batched_decisions_per_s (goal >= 2000)": 674,
                       "batched_decisions_per_s_static_encoder_router (goal >= 2000)": 15185})
    assert rows[2] == "| `cold_start_s` | goal <= 15 | 15.7 | not met in this run |"
    assert rows[3] == "| `pss_gib` | goal <= 4 | 4 | met |"  # the bound itself meets a <= goal
    assert rows[4] == "| `route_p50_via_proxy` | (context) | 2.87 |  |"
    assert rows[5].endswith("| goal >= 2000 | 674 | not met in this run |")
    assert rows[6].endswith("| goal >= 2000 | 15185 | met by the option |")


def test_readme_tables_names_a_file_that_is_not_a_bench_result(tmp_path, capsys):
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"ratios": {}}')
    assert readme_tables_main([str(wrong)]) == 2
    assert "is not a results file of bench/bench_router.py (missing 'serve')" in capsys.readouterr().err
    assert readme_tables_main([str(tmp_path / "absent.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_served_against_alone_rounds_pool_the_answers_samples_and_take_the_median_rounds_tokens():
    def rounds(samples, tokens):
        return [{"answer": {"samples_ms": ms, "p50_ms": sorted(ms)[len(ms) // 2]}, "tokens_4_streams": t}
                for ms, t in zip(samples, tokens)]
    served = rounds([[700, 720], [760, 800], [740]], [70, 60, 80])
    alone = rounds([[690, 710], [705], [700, 720]], [75, 72, 80])
    pooled = pooled_rounds(served, alone)
    # served samples 700 720 740 760 800 -> 740; alone 690 700 705 710 720 -> 705; 740 / 705 = 1.0496
    assert pooled["answer_served"]["p50_ms"] == 740 and pooled["answer_alone"]["p50_ms"] == 705
    assert pooled["answer_served_vs_alone_p50"] == 1.05
    # median rounds: 70 served against 75 raw
    assert pooled["tokens_served_vs_alone_4_streams"] == 0.933
    assert pooled["rounds"] == 3 and pooled["round_p50s_served"] == [720, 800, 740]


def test_runs_table_keeps_a_goal_whose_key_changed_and_marks_what_each_run_measured(monkeypatch):
    monkeypatch.setattr(readme_tables, "CONTEXT_ROWS", [])
    old = {"ratios": {"answer_sequential (goal <= 1.05)": 1.1, "pss_gib (goal <= 4)": 3.9}}
    new = {"ratios": {"answer_alternating (goal <= 1.05)": 1.03, "answer_sequential": 1.2, "pss_gib (goal <= 4)": 4.1}}
    rows = readme_tables.runs_rows({"run 1": old, "run 2": new})
    assert rows[0] == "| goal | run 1 | run 2 |"
    # run 2 still measures the old way, as context: its figure stands in the old goal's row, marked so
    assert rows[2:] == ["| `answer_sequential` <= 1.05 | 1.1 (missed) | 1.2 (context) |",
                        "| `pss_gib` <= 4 | 3.9 | 4.1 (missed) |",
                        "| `answer_alternating` <= 1.05 | - | 1.03 |"]


def test_selection_gap_names_the_pick_the_hindsight_best_and_the_rank_correlation_between_them():
    candidates = [{"label": "a", "area": 0.3, "test_apgr": 0.60, "picked": True},
                  {"label": "b", "area": 0.2, "test_apgr": 0.65, "picked": False},
                  {"label": "c", "area": 0.1, "test_apgr": 0.50, "picked": False}]
    (row,) = summarise({("mmlu", 1): candidates})
    assert (row["benchmark"], row["seed"], row["picked"], row["picked_apgr"]) == ("mmlu", 1, "a", 0.60)
    assert (row["best"], row["best_apgr"], row["candidates"]) == ("b", 0.65, 3)
    # rank differences 1, -1, 0: Spearman = 1 - 6 * 2 / (3 * (9 - 1)) = 0.5
    assert abs(row["spearman"] - 0.5) < 1e-12


def test_mahalanobis_scores_measure_from_the_nearest_domain_mean_under_the_shared_covariance():
    import numpy as np

    # two domains, each four points around its mean at distance 1: the shared covariance is 0.5 I, which
    # Ledoit-Wolf's shrinkage towards a multiple of I leaves as it is, so the precision is 2 I
    a = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]], float)
    keys, domains = np.vstack([a, a + [10, 0]]), np.array(["a"] * 4 + ["b"] * 4)
    mahalanobis, relative = mahalanobis_scores(keys, domains)
    assert np.allclose(mahalanobis(np.array([[0.0, 0.0], [5.0, 0.0], [12.0, 0.0]])), [0.0, 50.0, 8.0])
    # (5, 0) is the mean of all eight points, so its distance under the one Gaussian is 0: relative = 50 - 0
    assert np.allclose(relative(np.array([[5.0, 0.0]])), [50.0])


def test_mahalanobis_flags_cut_at_cross_fitted_scores_pass_the_domain_and_flag_a_far_prompt():
    import numpy as np

    rng = np.random.default_rng(0)
    keys = np.vstack([rng.normal(0, 1, (60, 3)), rng.normal(8, 1, (60, 3))])
    flags = mahalanobis_flags(keys, np.array(["a"] * 60 + ["b"] * 60), quantile=0.97)
    assert flags["mahalanobis"](np.array([[0.0, 0.0, 0.0], [8.0, 8.0, 8.0]])).tolist() == [False, False]
    assert flags["mahalanobis"](np.array([[30.0, -30.0, 0.0]])).tolist() == [True]
