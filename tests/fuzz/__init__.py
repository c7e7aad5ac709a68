"""A deterministic, bounded fuzzer for the service's two TCP ports.

It sends byte sequences on fresh TCP connections: to the WebSocket port, mutated and hostile
opening handshakes and, after a valid handshake, hostile frame sequences (deep JSON nesting,
edge numbers, reserved opcodes, lying lengths, fragments, close frames, floods); to the HTTP
port, a smaller share of mutated and hostile requests. ``cases.KINDS`` lists every kind and
its share.

Deterministic: a case is a pure function of ``(seed, index)`` (``generate_case``), so a
failure names two numbers that rebuild the exact bytes. Bounded: the caller chooses the
number of cases, every generator caps its sizes (200 KB at most), and the runner
(``runner.py``) gives each connection a deadline.

Modules: ``plan`` (what a case is), ``cases`` (the kinds and their shares),
``handshake_cases``, ``frame_cases`` and ``http_cases`` (one generator per kind), built from
``http_requests``, ``wsframes`` (a client frame encoder that also breaks the rules),
``hostile_json`` and ``mutate``; then ``runner`` (play one case), ``service`` (the process
under test) and ``witnesses`` (the bystander and the health probe).
"""

from tests.fuzz.cases import KINDS, generate_case, generate_cases
from tests.fuzz.plan import AwaitUpgrade, Case, Ending, Plan, Send

__all__ = [
    "KINDS",
    "AwaitUpgrade",
    "Case",
    "Ending",
    "Plan",
    "Send",
    "generate_case",
    "generate_cases",
]
