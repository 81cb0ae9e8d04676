"""plan_reload as data: (running config, new config) -> which streams and models stop, start,
restart, get replaced or stay."""

import pytest

from edged.config import build_config
from edged.reload_plan import ReloadPlan, plan_reload

MODELS = {
    "people": {"path": "people.onnx", "task": "detection"},
    "digits": {"path": "digits.onnx", "task": "classification"},
}
BASE = {
    "models": MODELS,
    "streams": {
        "door": {"source": "rtsp://cam/door", "model": "people"},
        "yard": {"source": "rtsp://cam/yard", "model": "people"},
    },
}


def changed(base, **sections):
    """``base`` with some sections replaced; a section given as a function edits a copy."""
    out = {key: dict(value) for key, value in base.items()}
    for key, value in sections.items():
        out[key] = value(dict(out.get(key, {}))) if callable(value) else value
    return out


def with_stream(name, **stream):
    def edit(streams):
        streams[name] = dict(streams.get(name, {}), **stream)
        return streams

    return edit


def without(name):
    def edit(section):
        section.pop(name)
        return section

    return edit


def with_model(name, **model):
    def edit(models):
        models[name] = dict(models.get(name, {}), **model)
        return models

    return edit


def plan(**names):
    """A ReloadPlan; fields not given are empty, names given as one space-separated string."""
    fields = {f: tuple(names.get(f, "").split()) for f in ReloadPlan._fields}
    return ReloadPlan(**fields)


CASES = [
    # (why, old config, new config, expected plan)
    (
        "nothing changed",
        BASE,
        BASE,
        plan(unchanged_streams="door yard", unchanged_models="people"),
    ),
    (
        "only the log level changed: nothing restarts",
        BASE,
        changed(BASE, log_level="debug"),
        plan(unchanged_streams="door yard", unchanged_models="people"),
    ),
    (
        "a stream added, on a running model",
        BASE,
        changed(BASE, streams=with_stream("gate", source="rtsp://cam/gate", model="people")),
        plan(start_streams="gate", unchanged_streams="door yard", unchanged_models="people"),
    ),
    (
        "a stream added, on a model nothing used yet",
        BASE,
        changed(BASE, streams=with_stream("desk", source="rtsp://cam/desk", model="digits")),
        plan(
            start_streams="desk",
            unchanged_streams="door yard",
            start_models="digits",
            unchanged_models="people",
        ),
    ),
    (
        "a stream removed; its model still used by the other",
        BASE,
        changed(BASE, streams=without("yard")),
        plan(stop_streams="yard", unchanged_streams="door", unchanged_models="people"),
    ),
    (
        "every stream removed: its model stops too",
        BASE,
        changed(BASE, streams={}),
        plan(stop_streams="door yard", stop_models="people"),
    ),
    (
        "a stream disabled is stopped like a removed one",
        BASE,
        changed(BASE, streams=with_stream("door", enabled=False)),
        plan(stop_streams="door", unchanged_streams="yard", unchanged_models="people"),
    ),
    (
        "a disabled stream enabled again",
        changed(BASE, streams=with_stream("door", enabled=False)),
        BASE,
        plan(start_streams="door", unchanged_streams="yard", unchanged_models="people"),
    ),
    (
        "a stream's source changed: that stream restarts",
        BASE,
        changed(BASE, streams=with_stream("door", source="rtsp://cam/door2")),
        plan(restart_streams="door", unchanged_streams="yard", unchanged_models="people"),
    ),
    (
        "a stream's timeout changed: that stream restarts",
        BASE,
        changed(BASE, streams=with_stream("yard", stall_timeout_s=5)),
        plan(restart_streams="yard", unchanged_streams="door", unchanged_models="people"),
    ),
    (
        "a used model changed: replaced in place, its streams keep running",
        BASE,
        changed(BASE, models=with_model("people", version="2")),
        plan(unchanged_streams="door yard", replace_models="people"),
    ),
    (
        "a detector becomes a classifier under the same name: replaced, streams keep running",
        BASE,
        changed(BASE, models=with_model("people", path="p.onnx", task="classification")),
        plan(unchanged_streams="door yard", replace_models="people"),
    ),
    (
        "a model no enabled stream uses changed: nothing to do",
        BASE,
        changed(BASE, models=with_model("digits", version="9")),
        plan(unchanged_streams="door yard", unchanged_models="people"),
    ),
    (
        "every stream moves to another model: streams restart, one model stops, one starts",
        BASE,
        changed(
            BASE,
            streams=lambda s: {name: dict(stream, model="digits") for name, stream in s.items()},
        ),
        plan(restart_streams="door yard", stop_models="people", start_models="digits"),
    ),
    (
        "one stream moves; the model it leaves still runs for the other",
        BASE,
        changed(BASE, streams=with_stream("door", model="digits")),
        plan(
            restart_streams="door",
            unchanged_streams="yard",
            start_models="digits",
            unchanged_models="people",
        ),
    ),
    (
        "a stream removed, one added, a model replaced, all at once",
        BASE,
        changed(
            BASE,
            streams=lambda s: dict(
                without("yard")(s), gate={"source": "rtsp://cam/gate", "model": "people"}
            ),
            models=with_model("people", version="3"),
        ),
        plan(
            stop_streams="yard",
            start_streams="gate",
            unchanged_streams="door",
            replace_models="people",
        ),
    ),
    (
        "from no streams to one",
        changed(BASE, streams={}),
        BASE,
        plan(start_streams="door yard", start_models="people"),
    ),
]


@pytest.mark.parametrize("why, old, new, expected", CASES, ids=[c[0] for c in CASES])
def test_plan_reload(why, old, new, expected):
    assert plan_reload(build_config(old), build_config(new)) == expected


def test_the_models_to_load_are_the_new_and_the_replaced_ones():
    new = changed(
        BASE,
        streams=with_stream("desk", source="rtsp://cam/desk", model="digits"),
        models=with_model("people", version="2"),
    )
    assert plan_reload(build_config(BASE), build_config(new)).load_models == ("digits", "people")


def test_a_plan_is_a_value():
    first = plan_reload(build_config(BASE), build_config(changed(BASE, streams={})))
    second = plan_reload(build_config(BASE), build_config(changed(BASE, streams={})))
    assert first == second and hash(first) == hash(second)
    with pytest.raises(AttributeError):
        first.stop_streams = ()  # type: ignore[misc]
