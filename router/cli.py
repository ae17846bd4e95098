"""`router`: the command line. Every bad argument or file ends in one readable error line and exit code 2."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2
EXIT_POLICY_REFUSED = 1  # `router policy status`: the endpoint serves an older policy than the one deployed


def _whole_number(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{value} must be at least {least}")
    return value


def _positive_int(text: str) -> int:
    return _whole_number(text, 1)


def _non_negative_int(text: str) -> int:
    return _whole_number(text, 0)


def _profile_name(text: str) -> str:
    import re

    from router.policy import PROFILE_NAME

    if not re.fullmatch(PROFILE_NAME, text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a profile name: 1 to 40 of a-z, 0-9, '_', '.', '-', "
                                         "starting with a letter or digit")
    return text


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{value} must be in (0, 1]")
    return value


def _share(interval: str):
    """An argparse type: a number inside `interval`, written like "[0, 1)" (nan is never inside)."""
    low_closed, high_closed = interval[0] == "[", interval[-1] == "]"
    low, high = (float(x) for x in interval[1:-1].split(","))

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not ((low <= value if low_closed else low < value) and (value <= high if high_closed else value < high)):
            raise argparse.ArgumentTypeError(f"{value:g} must be in {interval}")
        return value
    return parse


def _hours_ago(text: str) -> float:
    import time

    return time.time() - _share("(0, inf)")(text) * 3600


def _fetch(args) -> None:
    from models.catalogue import load_catalogue
    from models.fetch import fetch_all
    from models.moderation import exported_path, load_exported

    for path in fetch_all(only=args.only or None):
        print(f"ok  {path}")
    moderation = load_catalogue().moderation
    if not args.only or moderation.name in args.only:  # its pickles' numbers as plain arrays, for serving
        load_exported(moderation)
        print(f"ok  {exported_path(moderation)}")


def _validate(args) -> None:
    from router.artifacts import load_checked_policy

    policy = load_checked_policy(args.file)
    profiles = f", profiles {', '.join(policy.profiles)}" if policy.profiles else ""
    print(f"{args.file}: valid policy (version {policy.version}, fallback {policy.fallback}, "
          f"models {', '.join(policy.models)}{profiles})")


def _apply(args) -> None:
    from router.serving.live import apply_policy_file

    print(apply_policy_file(Path(args.file), Path(args.config), args.address))


def _status(args) -> int:
    from router.serving.live import policy_status

    report, refused = policy_status(args.url)
    print(report)
    return EXIT_POLICY_REFUSED if refused else 0


def _check_config(args) -> None:
    from router.serving.config_check import check_serve_config

    print(check_serve_config(args.file))


def _prune(args) -> None:
    from router.store import DecisionStore

    from router.store.answers import SharedAnswers
    from router.store.responses import ResponseStore

    store = DecisionStore(args.url)
    try:
        gone = store.prune(args.days)
        kept = ResponseStore(store.engine).prune(args.days)
        cached = SharedAnswers(store.engine).prune(args.days)
        print(f"{gone} decisions, {kept} stored responses and {cached} shared cached answers older than "
              f"{args.days:g} days deleted from {store.url}")
    finally:
        store.close()


EXIT_MONITOR_FIRED = 3  # `router monitor`: a drift or problem-region threshold was crossed


def _monitor(args) -> int:
    from router.offline.monitor_report import monitor_command

    report, paths = monitor_command(args)
    for note in report["notes"]:
        print(f"note: {note}")
    for alarm in report["fired"]:
        print(f"FIRED {alarm}")
    if not report["fired"]:
        print("quiet: nothing over the policy's monitor thresholds")
    for kind, path in paths.items():
        print(f"{kind:5} {path}")
    return EXIT_MONITOR_FIRED if report["fired"] else 0


def _label(args) -> None:
    if args.from_store is not None:
        return _label_store(args)
    from router.offline.label import label
    from router.offline.sandbox import Sandbox

    sandbox = Sandbox(memory_mb=args.code_memory_mb, unsandboxed=args.unsafe_run_model_code_without_sandbox)
    table = label(Path(args.prompts), Path(args.out), args.models or None, limit=args.limit, rejudge_log=args.rejudge,
                  grader=args.grader, per_model=args.per_model, threads=args.threads, address=args.address,
                  sandbox=sandbox)
    print(f"wrote {table}")


def _label_store(args) -> None:
    from models.catalogue import load_catalogue
    from router.offline.from_store import judge_store
    from router.store import store_url

    print(judge_store(args.from_store or store_url(None), Path(args.judged), load_catalogue(), args.sample,
                      args.grader, args.store_days, args.threads))


def _store_rows_flags(sub: argparse.ArgumentParser, judged_help: str, judged_default: str | None) -> None:
    """--from-store and its companions, shared by `router label` and `router train`."""
    sub.add_argument("--from-store", nargs="?", const="", metavar="URL", help="the decision store's answers "
                     "(default URL: $ROUTER_STORE_URL, else the SQLite file in ~/.cache)")
    sub.add_argument("--judged", default=judged_default, help=judged_help)
    sub.add_argument("--store-days", type=_share("(0, inf)"), metavar="DAYS", help="with --from-store: only the last DAYS days")


ENCODER_HELP = ("the embedding the router reads: the catalogue's encoder (default, minilm-l6-v2), or the static "
                "table distilled from it (minilm-l6-v2-static: about 20x the decisions per second, bench/encoder_static.md)")


def _train(args) -> None:
    from router.offline.pipeline import train_command

    print(json.dumps(train_command(args), indent=1))


def _calibrate(args) -> None:
    from router.offline.pipeline import calibrate_command

    print(json.dumps(calibrate_command(args), indent=1))


def _report(args) -> None:
    if args.shadow:
        return _shadow_report(args)
    from router.offline.pipeline import report_command

    for kind, path in report_command(args).items():
        print(f"{kind:5} {path}")


def _up(args) -> int:
    from router.serving.launcher import run

    if not Path(args.config).is_file():
        raise FileNotFoundError(f"{args.config}: no such Serve config")
    _check_serve_config(Path(args.config))  # before Ray starts: a bad file fails in a second, naming its line
    return run(Path(args.config), args.port)


def _check_serve_config(path: Path) -> None:
    from models.yaml_source import ConfigError, read_yaml_file
    from router.policy import load_policy

    data, _ = read_yaml_file(path)
    if not isinstance(data, dict) or not isinstance(data.get("applications"), list):
        raise ConfigError(str(path), [f"{path}: not a Ray Serve config: it needs an `applications` list, as "
                                      f"serve_config.yaml has"])
    load_policy(path)  # the ingress's user_config.policy


def _attack(args) -> None:
    from router.offline.attack_run import attack_command

    result = attack_command(args)
    for run in result["runs"]:
        print(f"{result['mode']} {run['direction']:4} gadget {run['gadget']!r}: flips up {run['up']:.1%} of "
              f"{run['clean_small']}, down {run['down']:.1%} of {run['clean_large']}; flagged {run['flagged']:.1%} "
              f"(clean {run['clean_flagged']:.1%}) [defence {result['defence']}]")


def _guard_train(args) -> None:
    from router.offline.attack_run import guard_train_command

    print(json.dumps(guard_train_command(args), indent=1))


def _shadow_report(args) -> None:
    from router.offline.shadow import compare, render_html, summary_lines
    from router.store import DecisionStore

    store = DecisionStore(args.store)
    try:
        result = compare(store.rows(since=args.since_unix))
    finally:
        store.close()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "shadow.json").write_text(json.dumps(result, indent=1))
    (out / "shadow.html").write_text(render_html(result))
    print("\n".join(summary_lines(result)))
    print(f"json  {out / 'shadow.json'}\nhtml  {out / 'shadow.html'}")


def _family_names() -> str:
    """The registry's names, so the help cannot drift from what `--family` accepts."""
    from router.families import FAMILIES

    return ", ".join(name + ("" if cls.in_auto else " (not in auto)") for name, cls in FAMILIES.items())


def parser() -> argparse.ArgumentParser:
    from router.version import package_version

    p = argparse.ArgumentParser(prog="router", description="Small-model ensemble router")
    p.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fetch-models", help="fetch and verify model weights (idempotent, cached)")
    f.add_argument("--only", nargs="*", help="model names (default: all, with the encoder)")
    f.set_defaults(run=_fetch)

    pol = sub.add_parser("policy", help="check or apply a routing policy").add_subparsers(dest="action", required=True)
    v = pol.add_parser("validate", help="name every bad field of a policy file (or serve_config.yaml), with its line")
    v.add_argument("file")
    v.set_defaults(run=_validate)
    a = pol.add_parser("apply", help="validate a policy and make it live on a running deployment, without a restart")
    a.add_argument("file")
    a.add_argument("--config", default="serve_config.yaml", help="the Serve config the app was deployed from")
    a.add_argument("--address", default="http://127.0.0.1:8265", help="Ray dashboard address (Serve REST API)")
    a.set_defaults(run=_apply)
    st = pol.add_parser("status", help="the live policy of a running endpoint, and any refused edit (exit code 1)")
    st.add_argument("--url", default="http://127.0.0.1:8000", help="the router's HTTP address")
    st.set_defaults(run=_status)
    cc = pol.add_parser("check-config", help="refuse a bad Serve config (schema, app args, policy) before "
                        "`serve deploy`")
    cc.add_argument("file")
    cc.set_defaults(run=_check_config)

    st_ = sub.add_parser("store", help="the decision store").add_subparsers(dest="action", required=True)
    pr = st_.add_parser("prune", help="delete decisions (and their feedback), stored responses and shared "
                        "cached answers older than the retention")
    pr.add_argument("--days", type=float, required=True, help="retention in days")
    pr.add_argument("--url", help="store URL (default: $ROUTER_STORE_URL, else the SQLite file in ~/.cache)")
    pr.set_defaults(run=_prune)

    mon = sub.add_parser("monitor", help="drift and problem regions of a window of the decision store: HTML + PNG + "
                         f"JSON; exit code {EXIT_MONITOR_FIRED} when a policy threshold fires")
    mon.add_argument("--url", help="store URL (default: $ROUTER_STORE_URL, else the SQLite file in ~/.cache)")
    mon.add_argument("--since", default="7d", help="window start: an ISO time (UTC without a zone) or a time ago "
                     "such as 24h, 7d (default 7d)")
    mon.add_argument("--until", default="now", help="window end, same forms (default now)")
    mon.add_argument("--reference", choices=("training", "window"), default="training", help="compare with the "
                     "router artifact's training prompts, or with an earlier window of the store")
    mon.add_argument("--reference-since", help="with --reference window: its start (default: as long a window "
                     "just before the monitored one)")
    mon.add_argument("--reference-until", help="with --reference window: its end (default: --since)")
    mon.add_argument("--policy", default="serve_config.yaml", help="policy (or Serve config) with the monitor: "
                     "thresholds and the router artifact")
    mon.add_argument("--out", default="reports/monitor")
    mon.add_argument("--clusters", default="auto", help="KMeans clusters (default auto: 8, fewer for small windows)")
    mon.add_argument("--seed", type=int, default=0)
    mon.set_defaults(run=_monitor)

    lab = sub.add_parser("label", help="run every model over a prompt set, judge the answers, write the outcome table")
    lab.add_argument("--prompts", default="data/labels/prompts.jsonl")
    lab.add_argument("--out", default="data/outcomes/default.csv", help="the table; its log is OUT with .log.jsonl")
    lab.add_argument("--models", nargs="*")
    lab.add_argument("--limit", type=_positive_int, help="only the first N prompts")
    lab.add_argument("--rejudge", action="store_true", help="judge the logged answers again before writing the table")
    lab.add_argument("--grader", help="the model that grades open questions (default: the catalogue's last, the large one)")
    lab.add_argument("--per-model", type=_positive_int, default=2, help="concurrent requests per model")
    lab.add_argument("--threads", type=_positive_int, help="llama.cpp threads per model (default: CPUs / models)")
    lab.add_argument("--address", help="Ray cluster to use, e.g. auto (default: a private local one)")
    lab.add_argument("--code-memory-mb", type=_positive_int, default=1024, help="memory limit of judged code")
    lab.add_argument("--unsafe-run-model-code-without-sandbox", action="store_true",
                     help="run model-written code with the network and your files in reach when the sandbox cannot "
                          "start (never on a machine that matters)")
    _store_rows_flags(lab, "with --from-store: append the grader's verdicts to this file (a re-run continues)",
                      "data/outcomes/store-judged.jsonl")
    lab.add_argument("--sample", type=_positive_int, help="with --from-store: grade this many more unrated answers "
                     "(default: all that have their text)")
    lab.set_defaults(run=_label)

    t = sub.add_parser("train", help="train the adequacy classifier on an outcome table")
    t.add_argument("--table", default="data/outcomes/default.csv")
    t.add_argument("--out", default="data/router/default.json")
    t.add_argument("--test-fraction", type=_share("[0, 1)"), default=0.0, help="rows held out for the metrics recorded in the artifact")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--family", default="auto", help="router family: auto (chosen by cross-validation on the "
                   f"training rows) or one of {_family_names()}")
    t.add_argument("--folds", type=_positive_int, default=5, help="cross-validation folds, grouped by prompt")
    t.add_argument("--encoder", help=ENCODER_HELP)
    t.add_argument("--ood-quantile", type=_fraction, default=0.97, help="out-of-distribution threshold: this quantile "
                   "of the training prompts' leave-one-out nearest-neighbour distances")
    _hardening_flags(t)
    t.add_argument("--policy", default="serve_config.yaml", help="with --adversarial-rounds: the policy (or Serve "
                   "config) whose thresholds the search attacks")
    _store_rows_flags(t, "with --from-store: the verdicts written by `router label --from-store`", None)
    t.set_defaults(run=_train)

    cal = sub.add_parser("calibrate", help="set thresholds from a target and write them into the policy YAML")
    cal.add_argument("--table", default="data/outcomes/default.csv")
    cal.add_argument("--policy", default="serve_config.yaml", help="policy file (or Serve config) to edit in place")
    goal = cal.add_mutually_exclusive_group(required=True)
    goal.add_argument("--keep-quality", type=_fraction, help="keep at least this share of always-large quality, e.g. 0.95")
    goal.add_argument("--max-large-share", type=_fraction, help="send at most this share of calls to the large model")
    cal.add_argument("--profile", type=_profile_name, help="write the thresholds as the policy's profile NAME, which "
                     "clients pick with model 'auto:NAME', and leave the policy's own thresholds as they are")
    cal.add_argument("--threshold-on", choices=["adequacy", "advantage", "auto"], help="what the thresholds are "
                     "held to (the policy's threshold_on, written into it); auto: the rule that meets the target "
                     "more cheaply on the out-of-fold rows. Default: the policy's own")
    cal.add_argument("--step", type=_share("(0, 0.5)"), default=0.05, help="the threshold grid's step")
    cal.add_argument("--folds", type=_positive_int, default=5)
    cal.add_argument("--seed", type=int, default=0)
    cal.set_defaults(run=_calibrate)

    up = sub.add_parser("up", help="start the ensemble from a Serve config on a private local Ray cluster until "
                        "Ctrl-C or SIGTERM, then stop every Ray process it started (what `make run` runs)")
    up.add_argument("--config", default="serve_config.yaml")
    up.add_argument("--port", type=_positive_int, default=8000, help="HTTP port on 127.0.0.1")
    up.set_defaults(run=_up)

    att = sub.add_parser("attack", help="search for a routing gadget (Shafran et al., 2025) and measure how many "
                         "held-out decisions it flips, with the gadget guard off or on")
    att.add_argument("--mode", choices=["white-box", "transfer", "black-box"], default="white-box",
                     help="white-box: the shipped router in-process; transfer: found on a surrogate router trained on "
                          "other data; black-box: only what POST /v1/route shows a client (--url)")
    att.add_argument("--direction", choices=["up", "down", "both"], default="both")
    att.add_argument("--defence", choices=["off", "on"], default="off", help="measure with the policy's gadget guard")
    att.add_argument("--no-adaptive", dest="adaptive", action="store_false", help="with --defence on: search "
                     "without the guard (does it catch a gadget that was not searched against it?)")
    att.add_argument("--policy", default="serve_config.yaml")
    att.add_argument("--table", default="data/outcomes/default.csv", help="prompts to search on and to measure on")
    att.add_argument("--url", default="http://127.0.0.1:8000", help="black-box: the router's address")
    att.add_argument("--api-key", help="black-box: the API key, when the endpoint needs one")
    att.add_argument("--vocabulary", choices=["tokens", "natural"], default="tokens",
                     help="gadget words: the tokenizer's words, or frequent plain words (lower perplexity)")
    att.add_argument("--length", type=_positive_int, default=10, help="gadget length in words")
    att.add_argument("--candidates", type=_positive_int, default=24, help="replacements tried per step")
    att.add_argument("--rounds", type=_positive_int, default=1, help="passes over the gadget's positions")
    att.add_argument("--search-prompts", type=_positive_int, default=16)
    att.add_argument("--test-prompts", type=_positive_int, default=200, help="held-out prompts to measure flips on")
    att.add_argument("--seed", type=int, default=0)
    att.add_argument("--out", help="write the results as JSON here")
    att.set_defaults(run=_attack)

    gd = sub.add_parser("guard", help="the gadget guard").add_subparsers(dest="action", required=True)
    gt = gd.add_parser("train", help="fit the gadget guard on clean prompts against gadget-carrying ones")
    gt.add_argument("--policy", default="serve_config.yaml", help="the router whose gadgets the search finds")
    gt.add_argument("--table", default="data/outcomes/default.csv")
    gt.add_argument("--out", default="data/router/guard.json")
    gt.add_argument("--searches", type=_positive_int, default=8, help="white-box gadget searches (resumable)")
    gt.add_argument("--target-fpr", type=_fraction, default=0.01, help="share of clean prompts it may flag")
    gt.add_argument("--adversarial-rounds", type=int, default=0, help="rounds of searching again with the guard on "
                    "and refitting on what those searches find")
    gt.add_argument("--seed", type=int, default=0)
    gt.set_defaults(run=_guard_train)

    r = sub.add_parser("report", help="train on a split, evaluate held-out, write HTML + PNG + JSON")
    r.add_argument("--data", default="routellm:mmlu", help="an outcome-table CSV, or routellm:mmlu / routellm:gsm8k")
    r.add_argument("--out", default="reports")
    r.add_argument("--policy", action="append", help="take thresholds and eligibility from this policy (or "
                   "serve_config.yaml; FILE#NAME: under its profile NAME); repeat it to compare policies on the same "
                   "data (what-if)")
    r.add_argument("--model-costs", nargs="*", metavar="NAME=COST",
                   help="cost per call of each model, for tables in RouteLLM's layout (prompt + True/False columns)")
    r.add_argument("--threshold", type=_share("[0, 1]"), default=0.5, help="small-model threshold when no policy is given")
    r.add_argument("--test-fraction", type=_share("(0, 1)"), default=0.5)
    r.add_argument("--max-train", type=_positive_int, help="train on at most N prompts")
    r.add_argument("--limit", type=_positive_int, help="use a random sample of N rows of the data")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--family", default="auto", help="router family: auto (chosen by cross-validation on the "
                   f"training split) or one of {_family_names()}")
    r.add_argument("--folds", type=_positive_int, default=5)
    r.add_argument("--encoder", help=ENCODER_HELP)
    r.add_argument("--router-cost-per-1k", type=_share("[0, inf)"), default=0.0000022,
                   help="the router's own cost per 1k input tokens (default: the encoder's 0.022B parameters at the "
                        "catalogue's 0.1 $/1M tokens per billion parameters)")
    r.add_argument("--robustness-sample", type=_positive_int, default=200, help="held-out prompts to perturb")
    r.add_argument("--gadgets", action="store_true", help="add routing gadgets to the robustness section: a "
                   "white-box search in each direction and the held-out decisions it flips (needs --policy)")
    _hardening_flags(r, "; needs --policy")
    r.add_argument("--shadow", action="store_true", help="instead: compare the live and the shadow policy on the "
                   "requests in the decision store (agreement, cost, feedback where they differ)")
    r.add_argument("--store", help="with --shadow: store URL (default: $ROUTER_STORE_URL, else the SQLite file)")
    r.add_argument("--since-hours", dest="since_unix", type=_hours_ago, help="with --shadow: only the last N hours")
    r.set_defaults(run=_report)
    return p


def _hardening_flags(p, needs: str = "") -> None:
    p.add_argument("--prefix-copies", type=_non_negative_int, default=0, help="adversarial training: also fit on "
                   f"N copies of each prompt behind random words, with its outcomes (default 0; README, 'Routing "
                   f"gadgets'{needs})")
    p.add_argument("--adversarial-rounds", type=_non_negative_int, default=0, help="adversarial training: rounds of "
                   f"searching gadgets against the router and fitting on copies behind them (default 0; resumable"
                   f"{needs})")


def main(argv: list[str] | None = None) -> int:
    from models.yaml_source import ConfigError

    args = parser().parse_args(argv)
    try:
        code = args.run(args)
    except KeyboardInterrupt:
        print(f"router {args.command}: interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    except (ConfigError, ValueError, KeyError, FileNotFoundError, RuntimeError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"router {args.command}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
