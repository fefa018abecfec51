"""The name a process reports under when ``switchyard serve`` is given no ``--instance``.

Compose and Kubernetes start every replica of a component alike; with the component's name as
the default, all of them reported as one row (heartbeats, NATS connection names, traces).
"""

from __future__ import annotations

import os
import socket

from switchyard.bus import subjects
from switchyard.runtime.reporting import MAX_INSTANCE, instance_name


def test_the_default_names_the_component_host_and_process() -> None:
    assert instance_name("head", host="3f2a9c1b7e4d", pid=1) == "head-3f2a9c1b7e4d-1"
    assert instance_name("head") == instance_name("head", host=socket.gethostname())
    assert instance_name("head").endswith(f"-{os.getpid()}")


def test_two_processes_on_one_host_get_two_names() -> None:
    assert instance_name("modelproxy", host="vm1", pid=10) != instance_name(
        "modelproxy", host="vm1", pid=11
    )


def test_a_pod_named_after_its_component_is_not_prefixed_again() -> None:
    pod = "modelproxy-6c8f7d9b5-x2k4q"
    assert instance_name("modelproxy", host=pod, pid=1) == f"{pod}-1"
    # Only a whole leading word counts: "heads-..." is another name.
    assert instance_name("head", host="heads-1", pid=7) == "head-heads-1-7"


def test_dots_and_other_characters_a_subject_token_refuses_are_replaced() -> None:
    name = instance_name("tail", host="web1.eu-west.example.com", pid=42)
    assert name == "tail-web1-eu-west-example-com-42"
    odd = instance_name("tail", host="a b*c>d.", pid=3)
    assert odd == "tail-a-b-c-d-3"
    for value in (name, odd):
        assert subjects.token(value) == value  # the heartbeat subject carries it unchanged


def test_no_host_name_still_names_the_process() -> None:
    assert instance_name("batch", host="", pid=9) == "batch-9"
    assert instance_name("batch", host="...", pid=9) == "batch-9"


def test_a_long_host_name_is_cut_to_one_token_and_stays_unique() -> None:
    host = "node-" + "x" * 120 + ".cluster.example.com"
    first = instance_name("modelproxy", host=host, pid=101)
    second = instance_name("modelproxy", host=host, pid=102)
    assert len(first) == len(second) == MAX_INSTANCE
    assert first != second  # the pids differ past the cut; the digest keeps them apart
    assert first.startswith("modelproxy-node-xxx")
    for value in (first, second):
        assert subjects.token(value) == value
