"""Native tests (`python -m pytest`): the filter's logic without Wasm."""

from kinesthetic_filter import run

from app import errors_only


def out(*lines):
    return [o.bytes.decode() for o in run(errors_only, lines)]


def test_keeps_server_errors_reduced():
    assert out(
        '{"ts":"2024-05-01T12:00:00Z","level":"error","status":503,"service":"api","msg":"boom","user":{"id":7}}'
    ) == ['{"ts":"2024-05-01T12:00:00Z","service":"api","msg":"boom"}']
    assert out('{"msg":"m","service":"s","status":500,"level":"error","ts":1}') == [
        '{"ts":1,"service":"s","msg":"m"}'
    ]


def test_drops_the_rest():
    assert out(
        '{"level":"warn","status":503}',
        '{"level":"error","status":499}',
        '{"level":"error","status":"503"}',
        '{"level":"error"',
        "plain text",
        '{"level":"error","status":1e999}',
    ) == []


def test_numbers_and_nested_values_stay_as_written():
    assert out('{"level":"error","status":5e2,"ts":1.50e+3,"msg":{ "a" : [1, 2] }}') == [
        '{"ts":1.50e+3,"msg":{"a":[1,2]}}'
    ]
