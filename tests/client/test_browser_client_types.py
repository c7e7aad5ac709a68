"""broadcaster-client.d.ts: the browser client's TypeScript declarations hold.

``tsc --noEmit`` (npm typescript, locked in scripts/protocol_tools) checks tests/js/example.ts,
a page script that uses the client through the declarations, narrows every server message
by ``type``, and marks misuses that must not compile with ``@ts-expect-error``. The
declarations must also name exactly what the module exports.
"""

from __future__ import annotations

import re

import trio

from tests import REPO
from tests.node_tools import ensure_node, ensure_protocol_tools

STATIC = REPO / "broadcaster" / "static"


async def test_tsc_accepts_the_example_and_rejects_its_misuses() -> None:
    modules = await trio.to_thread.run_sync(ensure_protocol_tools)
    node = await trio.to_thread.run_sync(ensure_node)
    with trio.fail_after(60):
        done = await trio.run_process(
            [node, str(modules / "typescript" / "bin" / "tsc"), "-p", str(REPO / "tests" / "js")],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 0, (done.stdout + done.stderr).decode()


def test_the_declarations_name_every_export_of_the_module() -> None:
    module = (STATIC / "broadcaster-client.js").read_text()
    declarations = (STATIC / "broadcaster-client.d.ts").read_text()
    exported = re.findall(r"^export (?:const|function|class) (\w+)", module, re.M)
    for names in re.findall(r"^export \{([^}]*)\} from ", module, re.M):  # re-exports
        exported += [name.strip() for name in names.split(",")]
    declared = re.findall(r"^export declare (?:const|function|class) (\w+)", declarations, re.M)
    assert set(declared) == set(exported)
