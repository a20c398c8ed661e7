"""A verdict given by hand wins over the rules, survives `rescore`, and decides what
`trainer build-dataset` takes from the store."""

from __future__ import annotations

from click.testing import CliRunner

from capture_daemon.cli import main
from capture_daemon.store import HUMAN_REJECTED, TraceStore
from tests.test_cli_traces import _store_sessions


def test_human_verdict_wins_and_survives_rescore(understudy_home):
    traces = _store_sessions()
    good = traces["compare the billing worker and the mailer"]
    poor = traces["say hi"]
    assert good.quality.accepted and not poor.quality.accepted
    with TraceStore.open() as store:
        assert store.set_human_verdict([good.trace_id], False) == 1
        assert store.set_human_verdict([poor.trace_id], True) == 1
        assert store.count(accepted=True) == 1
        assert HUMAN_REJECTED in store.get(good.trace_id).quality.reasons
    result = CliRunner().invoke(main, ["rescore"])
    assert result.exit_code == 0 and "2 verdicts given by hand kept" in result.output, result.output
    with TraceStore.open() as store:
        assert [t.trace_id for t in store.iter_traces(accepted=True)] == [poor.trace_id]
        # Dropped: the rules decide again.
        store.set_human_verdict([good.trace_id, poor.trace_id], None)
        assert [t.trace_id for t in store.iter_traces(accepted=True)] == [good.trace_id]
        assert store.human_verdicts() == {}
        store.set_human_verdict([good.trace_id], False)
        store.delete_trace(good.trace_id)  # forgetting a trace forgets its verdict too
        assert store.human_verdicts() == {}


def test_build_dataset_honours_human_verdicts(understudy_home, tmp_path):
    from trainer.dataset import DatasetConfig, build_dataset, load_traces

    traces = _store_sessions()
    poor = traces["say hi"]
    with TraceStore.open() as store:
        store.set_human_verdict([poor.trace_id], True)
    report = build_dataset(load_traces(None), DatasetConfig(output_dir=tmp_path / "ds", val_fraction=0, test_fraction=0))
    assert sum(report.counts.values()) == 2
