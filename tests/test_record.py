"""study.layout: the one reader of sweep.json (one rule: a needed part that is missing or malformed is
a one-line error naming the file and the part, any other malformed part is left out), the one reader
of a trial's config record, the driver's result records, and the stop reasons."""
import json

import pytest

from study import layout, states
from study.config import TrainConfig, UserError
from study.states import DIVERGED, EARLY_STOPPED, FINAL_STATUSES, FINISHED

PLAN = {"search": "grid", "scheduler": "asha", "max_t": 9, "phase_dir": "screen"}


def write(path, content) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / layout.SWEEP_FILE).write_text(content if isinstance(content, str) else json.dumps(content))


def test_a_whole_record_reads_back(tmp_path):
    phases = {"screen": {"dir": "screen", "expected_trials": 4},
              "confirm": {"dir": "confirm-2", "top": 1, "seeds": [1, 2, 3], "factors": ["lr"]},
              "earlier_confirms": [{"dir": "confirm"}]}
    write(tmp_path, {"plan": PLAN, "params": {"lr": {"grid": [0.1]}}, "expected_trials": 4, "phases": phases})
    sweep = layout.read_sweep(tmp_path, needs=("plan", "params"))
    assert sweep["plan"] == PLAN
    assert sweep["phases"] == phases and layout.phase_specs(sweep) == {k: phases[k] for k in ("screen", "confirm")}
    assert layout.expected_trials(sweep, layout.SCREEN) == 4 and layout.expected_trials(sweep, layout.CONFIRM) == 0


@pytest.mark.parametrize("content, part", [
    ({"plan": {"search": "grid"}, "params": {}}, "plan"),  # no scheduler, no max_t
    ({"plan": [], "params": {}}, "plan"),
    ({"plan": PLAN, "params": []}, "params"),
    ({"plan": PLAN}, "params"),
])
def test_a_needed_part_that_is_wrong_is_one_line_naming_the_file_and_the_part(content, part, tmp_path):
    write(tmp_path, content)
    with pytest.raises(UserError) as raised:
        layout.read_sweep(tmp_path, needs=("plan", "params"))
    message = str(raised.value)
    assert f"{tmp_path}/sweep.json" in message and f"`{part}`" in message and "\n" not in message
    assert part not in layout.read_sweep(tmp_path)  # read without needs: left out, the rest kept


@pytest.mark.parametrize("content, words", [("", "not valid JSON"), ("[]", "not a sweep record"),
                                            (b"\xff\xfe", "not valid JSON"), (None, "has no sweep.json")])
def test_a_file_that_is_not_a_record_is_an_error_when_needed_and_empty_otherwise(content, words, tmp_path):
    if content is not None:
        tmp_path.joinpath(layout.SWEEP_FILE).write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UserError, match=words):
        layout.read_sweep(tmp_path, needs=("plan",))
    assert layout.read_sweep(tmp_path) == {}


@pytest.mark.parametrize("directory", ["", ".", "..", "../elsewhere", "a/b", "a\\b", 7])
def test_a_phase_whose_directory_is_not_one_plain_name_is_dropped(directory, tmp_path):
    write(tmp_path, {"expected_trials": "eight", "phases": {"screen": {"dir": directory}}})
    sweep = layout.read_sweep(tmp_path)
    assert "phases" not in sweep and "expected_trials" not in sweep
    write(tmp_path, {"phases": {"screen": {"dir": "screen", "expected_trials": "4"}}})
    assert layout.read_sweep(tmp_path)["phases"] == {"screen": {"dir": "screen"}}  # the count left out


QUESTION = {"id": "a vs b", "kind": "difference", "margin": 0.5, "weights": {"a": 1.0, "b": -1.0}}


@pytest.mark.parametrize("change", [
    {"looks": [{"dir": "confirm", "seeds": [], "arms": [0]}]},  # a look without seeds
    {"looks": [{"dir": "confirm", "seeds": [1], "arms": [0], "cap": 0}]},
    {"looks": [{"dir": "confirm", "seeds": [1], "arms": [2]}]},  # an arm the phase does not have
    {"max_seeds": "12"}, {"max_seeds": 0}, {"margin": -0.5}, {"margin": float("nan")}, {"alpha": 1.5},
    {"questions": [{**QUESTION, "kind": "other"}]}, {"questions": [{**QUESTION, "weights": {"a": "1"}}]},
    {"questions": [{k: v for k, v in QUESTION.items() if k != "margin"}]}, {"questions": {"a vs b": QUESTION}},
    # what every reader indexes (issue 37, class 3: a KeyError in the report)
    {"seeds": []}, {"seeds": "1, 2"}, {"factors": "x"}, {"arms": [{"why": "no levels"}]}, {"arms": {"x": 1}},
])
def test_a_confirm_design_not_as_the_driver_records_it_is_a_one_line_error_for_the_driver(change, tmp_path):
    confirm = {"dir": "confirm", "top": 1, "seeds": [1, 2], "factors": ["x"],
               "arms": [{"levels": {"x": 1}}, {"levels": {"x": 2}}],
               "max_seeds": 4, "margin": 0.5, "alpha": 0.05, "questions": [QUESTION],
               "looks": [{"dir": "confirm", "seeds": [1, 2], "arms": [0, 1], "cap": 4}]}
    record = {"plan": PLAN, "params": {}, "phases": {"screen": {"dir": "screen"}, "confirm": confirm}}
    write(tmp_path, record)
    assert layout.read_sweep(tmp_path, needs=("plan", "params"))["phases"]["confirm"] == confirm  # as recorded: read
    write(tmp_path, json.loads(json.dumps({**record, "phases": {**record["phases"], "confirm": {**confirm, **change}}})))
    with pytest.raises(UserError) as raised:
        layout.read_sweep(tmp_path, needs=("plan", "params"))
    message = str(raised.value)
    assert "`phases.confirm` is not as the driver records it" in message and "\n" not in message
    assert "phases" not in layout.read_sweep(tmp_path)  # the report reads what it can: left out


def test_the_record_is_written_atomically_and_reads_back(tmp_path):
    target = tmp_path / "exp"
    layout.write_sweep(str(target), {"plan": PLAN, "params": {}})
    assert sorted(p.name for p in target.iterdir()) == [layout.SWEEP_FILE]  # no partial file left
    assert layout.read_sweep(target, needs=("plan", "params"))["plan"]["max_t"] == 9


def test_a_config_record_reads_as_the_train_config_it_holds_or_says_what_is_wrong(tmp_path):
    path = tmp_path / layout.TRIAL_CONFIG_FILE
    cfg = TrainConfig(lr=0.05, attention="channel")
    path.write_text(json.dumps({"config": cfg.to_dict(), "git": "x"}))
    assert layout.read_trial_config(path) == cfg
    for content, words in (("{", "cannot be read"), ("[1]", "does not hold a JSON object"),
                           ('{"config": 3}', "holds no 'config' object"),
                           ('{"config": {"attention": "nope"}}', "attention")):
        path.write_text(content)
        with pytest.raises(UserError, match=words):
            layout.read_trial_config(path)
    with pytest.raises(UserError, match="is missing"):
        layout.read_trial_config(tmp_path / "absent.json")


def test_result_rows_of_the_driver_record_skip_what_is_not_a_row(tmp_path):
    path = layout.record_path(tmp_path, "abcde_00000")
    assert path == tmp_path / layout.RECORDS_DIR / "abcde_00000.json" and layout.read_result_rows(path) == []
    path.parent.mkdir()
    path.write_text(json.dumps({"rows": [{"epoch": 1}, 3, {"epoch": 2}]}))
    assert layout.read_result_rows(path) == [{"epoch": 1}, {"epoch": 2}]
    path.write_text('{"rows": {"epoch": 1}}')
    assert layout.read_result_rows(path) == []


def test_stop_reasons_follow_the_final_report_then_rays_status():
    assert FINAL_STATUSES == (FINISHED, EARLY_STOPPED, DIVERGED)
    for status in FINAL_STATUSES:
        assert states.stop_reason("TERMINATED", {"status": status, "epochs_run": 3}, None) == status
    assert states.stop_reason("TERMINATED", {"status": "running", "done": True}, None) == "scheduler_stopped"
    assert states.stop_reason("ERROR", {"status": FINISHED}, "") == "errored"  # no epochs_run: not a final report
    assert states.stop_reason(None, {}, "") == "errored"
    assert states.stop_reason("ERROR", {}, states.TIMED_OUT_ERROR.format(seconds=9)) == "timed_out"
    assert [states.stop_reason(s, {}, None) for s in ("PENDING", "RUNNING", "PAUSED", None)] == ["unfinished"] * 4
    assert set(states.STOP_REASONS) == {*FINAL_STATUSES, "scheduler_stopped", "timed_out", "errored", "unfinished"}
