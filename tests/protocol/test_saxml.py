"""Saxml REST parsing in both dialects: messages name the key and the rule."""

import pytest

from llmcell.protocol.saxml import (SaxError, generate_reply, parse_generate, parse_listall,
                                    parse_model_only, parse_publish)

PUB = {"model": "/sax/test/m", "model_path": "smollm2-135m-instruct", "checkpoint": "None",
       "replicas": 2}


def test_publish_shapes_differ_by_dialect():
    assert parse_publish(PUB, "v2").reply("v2")["model_path"] == "smollm2-135m-instruct"
    v1 = dict(PUB)
    v1["path"] = v1.pop("model_path")
    assert parse_publish(v1, "v1").reply("v1")["path"] == "smollm2-135m-instruct"


@pytest.mark.parametrize("body,needle", [
    (dict(PUB, replicas=0), "'replicas' must be an integer in [1,"),
    (dict(PUB, replicas="2"), "'replicas'"),
    (dict(PUB, model="smollm2"), "/sax/<cell>/<name>"),
    ({"model": "/sax/test/m"}, "missing key(s)"),
    ([1, 2], "JSON object"),
])
def test_publish_errors_name_the_key(body, needle):
    with pytest.raises(SaxError) as e:
        parse_publish(body, "v2")
    assert needle in e.value.message and e.value.status == 400


def test_v1_rejects_extra_keys_and_answers_400_error_key():
    with pytest.raises(SaxError) as e:
        parse_model_only({"model": "/sax/test/m", "x": 1}, "v1")
    assert e.value.body("v1") == {"Error": e.value.message} and e.value.status_for("v1") == 400
    assert parse_model_only({"model": "/sax/test/m", "x": 1}, "v2") == "/sax/test/m"
    assert SaxError(404, "gone").body("v2") == {"detail": "gone"}


def test_generate_defaults_and_limits():
    g = parse_generate({"model": "/sax/test/m", "query": "hi"}, "v2")
    p = g.sampling
    assert (p.temperature, p.max_tokens, p.top_k, p.top_p) == (0.5, 128, 200, 0.95)
    for key, value in (("per_example_top_p", 2), ("per_example_top_p", 0),
                       ("per_example_max_decode_steps", 0), ("temperature", float("nan")),
                       ("per_example_top_k", 1.5)):
        with pytest.raises(SaxError, match=rf"'extra_inputs\.{key}' must be"):
            parse_generate({"model": "/sax/test/m", "query": "hi",
                            "extra_inputs": {key: value}}, "v2")
    with pytest.raises(SaxError, match="unknown 'extra_inputs'"):
        parse_generate({"model": "/sax/test/m", "query": "hi", "extra_inputs": {"beam": 2}}, "v2")
    assert generate_reply([["a", -1.0]], "v1") == {"generate_response": [["a", -1.0]]}


def test_listall_needs_a_cell_path():
    assert parse_listall({"sax_cell": "/sax/test/"}, "v2") == "/sax/test"
    with pytest.raises(SaxError, match="sax_cell"):
        parse_listall({"sax_cell": "test"}, "v2")
