"""Rate limits: requests and tokens per period, per API key, user, team, LLM (or route) and connection.

    limits:
      period: 60                 # seconds of a window (60: requests and tokens per minute)
      strategy: moving-window    # for requests: moving-window (exact), fixed-window, sliding-window
      default: {rpm: 600}        # every key (caller) without an entry under keys
      keys:  {batch-job: {rpm: 60, tpm: 100000}}
      users: {alice: {rpm: 120}}
      teams: {search: {tpm: 2000000}}
      llms:  {"openai:myopenai:gpt-4o": {rpm: 5000, tpm: 800000}}   # an LLM or a route id
      connections: {myopenai: {tpm: 2000000}}

The caller (key, user, team) comes from the :class:`~.scope.CallScope`: ``mesh serve`` sets it from
the API key (``server.api_keys[]``: name, user, team), library code with ``call_scope(...)``.

The windows are kept by the maintained ``limits`` library, in the mesh's state store: Redis
(``state.redis_url``: shared by every worker and process) or this process's memory. In an event loop
on Redis (``mesh serve``), every window of a call is tested and taken by one script in one round trip,
on the data layout limits uses (see ``_ACQUIRE_ALL``); a route's call takes its first target's windows
and reads the budgets' spend in that same trip (``LimitsLayer._route_enter``). Far from its limits a
worker takes several calls' worth in one trip and counts them itself for a moment (``_Lease``); the
gateway's pass-through calls are counted by forward hooks, so a call its lease covers awaits nothing
(``LimitsLayer.forward_enter``). Requests use the configured strategy; tokens a fixed window (a counter the call's cost is added to: a moving window
would store one entry per token). Tokens are estimated before the call (~4 characters a token, see
:func:`.usage_of.estimate_tokens`) and the estimate replaced by the provider's usage (input + output)
after it: a call is refused when the window's tokens plus its estimate would pass the limit.

A refused call raises :class:`~langchain_mesh.errors.RateLimitExceeded` before anything is sent;
``mesh serve`` answers 429 with ``Retry-After`` and OpenAI's ``x-ratelimit-*`` headers. A route's
target calls (``scope.extra["route"]``) count only against the target's own LLM and connection
limits: the caller was counted once, on the route.
"""

from __future__ import annotations

import asyncio
import math
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Optional

from .._loop import running_loop
from ..errors import RateLimitExceeded
from .breaker import CLOSED
from .chain import Await, Layer, ahooked
from .state import LEASE_TTL, aguarded, guarded, is_outage, leases_on, log, redis_url, store_for
from .usage_of import estimate_tokens, on_forward_end, tokens_of

__all__ = ["LimitsLayer", "make_layer", "limiter_for"]

_SKIP = frozenset({"count_tokens", "acount_tokens"})
_NO_TARGET: list[Any] = []  # (never changed)
_PREFIX = "LIMITS"  # limits' RedisStorage.PREFIX: its strategies (429 headers, library calls) read our windows

# Leases (see _Lease; LEASE_TTL, how long one lasts, is in state.py): the most calls one covers, and how
# much room every window must have left for it (LEASE_ROOM times what it takes): only far from a limit.
LEASE_MAX = 64
LEASE_ROOM = 64

# Every window of one call tested, then taken, in one round trip and atomically (Redis runs a script
# alone): a refusal counts nothing. The data are laid out as the limits library lays them out (a
# moving window is a list of timestamps, newest first, trimmed to the limit; a fixed window a counter
# that expires with its period), so its strategies read these windows and the sync path shares them.
# Why a script of our own: limits takes one command per window, a gateway call has up to six windows
# (key, user, team, LLM, connection; requests and tokens), and those round trips were most of the
# policy path's cost (issue 24).
# A call to a route takes two groups of windows: the route's (KEYS[1..a]), then those of the target it
# will call first (KEYS[a+1..a+b]), each all or nothing: a target that is full does not refuse the
# route's call (the route falls back to its next target, as when the target's own layer refuses it).
# The keys after those are only read (GET): the budgets' spend counters, read in the same trip.
# A lease (see _Lease): asked for ``n`` calls, the script takes n calls' worth of every window when
# each has room for LEASE_ROOM times that, else n/2's, n/4's... down to one call's worth, as without
# a lease.
# A lease's moving-window entries are stamped ``stamp`` (its deadline), so none expires before a
# call it counted. ARGV: now, a, b, n, stamp, then per window kind ("m" moving, "c" counter), limit,
# expiry, one call's amount. Returns {the 1-based index of the route window that refused, or 0; 1 if
# the target's were taken; how many calls' worth was taken; the values read...}.
_ACQUIRE_ALL = """
local now, a, b, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local function refused(first, last, times)
  for i = first, last do
    local kind, limit, expiry, amount = ARGV[4*i+2], tonumber(ARGV[4*i+3]), tonumber(ARGV[4*i+4]), tonumber(ARGV[4*i+5]) * times
    if kind == "m" then
      if amount > limit then return i end
      local entry = redis.call("lindex", KEYS[i], limit - amount)
      if entry and tonumber(entry) >= now - expiry then return i end
    elseif tonumber(redis.call("get", KEYS[i]) or "0") + amount > limit then
      return i
    end
  end
  return 0
end
local function take(first, last, times, stamp)
  for i = first, last do
    local kind, limit, expiry, amount = ARGV[4*i+2], tonumber(ARGV[4*i+3]), tonumber(ARGV[4*i+4]), tonumber(ARGV[4*i+5]) * times
    if kind == "m" then
      local entries = {}
      for j = 1, amount do entries[j] = stamp end
      redis.call("lpush", KEYS[i], unpack(entries))
      redis.call("ltrim", KEYS[i], 0, limit - 1)
      redis.call("expire", KEYS[i], expiry)
    elseif redis.call("incrby", KEYS[i], amount) == amount then
      redis.call("expire", KEYS[i], expiry)
    end
  end
end
while n > 1 and refused(1, a + b, n * LEASE_ROOM) ~= 0 do n = math.floor(n / 2) end
local stamp = n > 1 and ARGV[5] or ARGV[1]
local out = {refused(1, a, n), 0, n}
if out[1] ~= 0 then return out end
take(1, a, n, stamp)
if b > 0 and refused(a + 1, a + b, n) == 0 then
  take(a + 1, a + b, n, stamp)
  out[2] = 1
end
for i = a + b + 1, #KEYS do out[#out + 1] = redis.call("get", KEYS[i]) or false end
return out
""".replace("LEASE_ROOM", str(LEASE_ROOM))

# Windows taken for a route's first target that the route then did not call (its breaker opened
# meanwhile, its deadline passed): given back. A moving window's entry is removed by its timestamp
# (the string the acquire script pushed), a counter decremented. ARGV: now, then kind, amount per key.
_GIVE_BACK = """
for i = 1, #KEYS do
  if ARGV[2*i] == "m" then
    redis.call("lrem", KEYS[i], tonumber(ARGV[2*i+1]), ARGV[1])
  elseif redis.call("exists", KEYS[i]) == 1 then  -- an expired counter stays gone (no key without expiry)
    redis.call("incrby", KEYS[i], -tonumber(ARGV[2*i+1]))
  end
end
return 0
"""


class _Taken:
    """A route's first target whose windows the route's limits layer took before the call (see
    :meth:`LimitsLayer._route_enter`): the target's own layer, seeing it, counts nothing again."""

    __slots__ = ("llm_id", "checks", "cost", "now", "failed")

    def __init__(self, llm_id: str, checks: list["_Check"], cost: int, now: str):
        self.llm_id: Optional[str] = llm_id  # None once the target's call started (consumed)
        self.checks, self.cost, self.now = checks, cost, now
        self.failed = False  # the target's call failed: its layer gave back the tokens


#: the calling context's :class:`_Taken`, set around a route's call
_TAKEN: ContextVar[Optional[_Taken]] = ContextVar("langchain_mesh_limits_taken", default=None)


@dataclass(frozen=True)
class _Check:
    """One window to hit: requests or tokens of one key/user/team/LLM/connection."""

    dim: str  # "requests" | "tokens"
    kind: str  # key | user | team | llm | connection
    name: str
    item: Any  # limits.RateLimitItem
    key: str = ""  # the storage key, computed once (item.key_for(*ids))
    rkey: str = ""  # the same in Redis

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", self.item.key_for(*self.ids))
        object.__setattr__(self, "rkey", f"{_PREFIX}:{self.key}")  # as limits' Redis storage names it

    @property
    def ids(self) -> tuple[str, str, str]:
        return (self.dim, self.kind, self.name)

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name!r}: {self.item.amount} {self.dim} per {self.item.multiples} s"


class _Checks(list):  # type: ignore[type-arg]
    """A call's windows in the order they are hit (:meth:`Limiter.order`), with ``entries``: each as
    ``(storage key, limit, mode)`` for :meth:`.windows.LocalWindows.hit_all` (0 moving window, 1 counter
    of requests, 2 counter of tokens), worked out once per plan rather than per call."""

    __slots__ = ("entries", "token_keys", "rkeys")


class Limiter:
    """The mesh's windows: one ``limits`` storage (Redis or memory) and a limiter per dimension,
    sync and async (the async ones on ``redis.asyncio``; in memory the sync ones serve both, they never wait)."""

    def __init__(self, mesh: Any):
        import limits
        from limits import strategies
        from limits.storage import MemoryStorage, storage_from_string

        cfg = mesh.config.limits
        self.config = mesh.config
        self.period = cfg.period
        url = redis_url(mesh.config)
        timeout = mesh.config.state.timeout if mesh.config.state is not None else 0.5
        strategy = {"moving-window": strategies.MovingWindowRateLimiter,
                    "fixed-window": strategies.FixedWindowRateLimiter,
                    "sliding-window": strategies.SlidingWindowCounterRateLimiter}[cfg.strategy]
        if url:
            opts = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
            self.storage = storage_from_string(url, **opts)
            from limits.aio import strategies as astrategies
            from limits.aio.storage import RedisStorage as AsyncRedisStorage

            astorage = AsyncRedisStorage("async+" + url, implementation="redispy", **opts)
            astrategy = getattr(astrategies, strategy.__name__)
            self.arequests: Any = astrategy(astorage)
            self.atokens: Any = astrategies.FixedWindowRateLimiter(astorage)
            self.astorage: Any = astorage
            # the gateway's path: every window in one scripted round trip (see _ACQUIRE_ALL) on the
            # state store's pipelined connection; sliding windows keep limits' own two-key scripts
            self.pipes: Any = store_for(mesh) if cfg.strategy != "sliding-window" else None
        else:
            # limits' MemoryStorage only where ours lacks the strategy (see windows.py for why)
            from .windows import LocalWindows

            self.storage = MemoryStorage() if cfg.strategy == "sliding-window" else LocalWindows()
            self.arequests = self.atokens = self.astorage = self.pipes = None
        self.requests = strategy(self.storage)
        self.tokens = strategies.FixedWindowRateLimiter(self.storage)
        # moving and fixed windows are one storage call each (what the strategies' hit() does): made
        # here with the storage key computed once per window, not rebuilt from its parts on every call
        self.kind = cfg.strategy
        self.expiry = self.period
        self.remote = bool(url)  # Redis: may be down (state.on_failure), and async calls must not block
        self._incr = getattr(self.storage, "add", None) or self.storage.incr
        self._item = limits.RateLimitItemPerSecond
        self._items: dict[tuple[str, int], Any] = {}
        # in memory (LocalWindows): every window of a call in one storage call (see _Checks)
        self._hit_all = getattr(self.storage, "hit_all", None)
        self._add_all = getattr(self.storage, "add_all", None)
        # Redis: calls this worker makes far from their limits take leases (see _Lease)
        self._leases: Optional[dict[tuple[Any, Any], _Lease]] = {} if leases_on(mesh.config) else None

    def item(self, dim: str, amount: int) -> Any:
        got = self._items.get((dim, amount))
        if got is None:
            got = self._items[(dim, amount)] = self._item(amount, self.period, namespace="MESH")
        return got

    # ---- sync ---------------------------------------------------------------------------------------

    def order(self, checks: list[_Check]) -> tuple[list[_Check], bool]:
        """``checks`` in the order they are hit, and whether they must be tested first. Counters
        (tokens; fixed-window requests) can be given back when a later window refuses the call, so
        they go first; a moving or sliding window cannot, so they go last, and when there are
        several of those they are all tested before any is hit (one refusal must not leave the
        others counted)."""
        counters = [c for c in checks if c.dim == "tokens" or self.kind == "fixed-window"]
        windows = [c for c in checks if c not in counters]
        ordered = _Checks(counters + windows)
        ordered.entries = tuple((c.key, c.item.amount, 2 if c.dim == "tokens" else 0 if c in windows else 1)
                                for c in ordered)
        ordered.token_keys = tuple(c.key for c in ordered if c.dim == "tokens")
        ordered.rkeys = tuple(c.rkey for c in ordered)  # its windows' lease (_Lease), with a target's
        return ordered, len(windows) > 1

    def _undo(self, done: list[_Check], cost: int) -> None:
        for d in done:
            self._add(d, -cost if d.dim == "tokens" else -1)

    def acquire(self, checks: list[_Check], cost: int, test_first: bool = False) -> None:
        """Count the call against every window (``checks`` as :meth:`order` gives them), or raise
        RateLimitExceeded having counted nothing."""
        entries = getattr(checks, "entries", None)
        if entries is not None and self._hit_all is not None and self._hit_all(entries, self.expiry, cost):
            return None  # in memory, every window taken at once; a refusal takes the path below, which names it
        if test_first:
            for c in checks:
                if not self._test(c, cost):
                    self._refuse(c, checks)
        done: list[_Check] = []
        for c in checks:
            if not self._hit(c, cost):
                self._undo([d for d in done if d.dim == "tokens" or self.kind == "fixed-window"], cost)
                self._refuse(c, checks)
            done.append(c)

    def _test(self, c: _Check, cost: int) -> bool:
        return (self.requests.test(c.item, *c.ids) if c.dim == "requests"
                else self.tokens.test(c.item, *c.ids, cost=cost))

    def _hit(self, c: _Check, cost: int) -> bool:
        st = self.storage
        if c.dim == "requests":
            if self.kind == "moving-window":
                return st.acquire_entry(c.key, c.item.amount, self.expiry)
            if self.kind == "sliding-window":
                return self.requests.hit(c.item, *c.ids)
            cost = 1
        if self._incr(c.key, self.expiry, cost) <= c.item.amount:
            return True
        self._incr(c.key, self.expiry, -cost)  # a refused call takes nothing from the window
        return False

    def _add(self, c: _Check, amount: int) -> None:
        if amount:
            self._incr(c.key, self.expiry, amount)

    def reconcile(self, checks: list[_Check], estimate: int, actual: Optional[int]) -> None:
        """Replace the estimate with what the provider counted (None: the call failed, nothing used)."""
        delta = (actual if actual is not None else 0) - estimate
        if delta:
            keys = getattr(checks, "token_keys", None)
            if keys is not None and self._add_all is not None:  # in memory: every token window, one lock
                self._add_all(keys, self.expiry, delta)
                return
            for c in checks:
                if c.dim == "tokens":
                    self._incr(c.key, self.expiry, delta)

    def _refuse(self, c: _Check, checks: list[_Check]) -> None:
        stats = [(x, self._stats(x)) for x in checks if x.kind == c.kind and x.name == c.name]
        raise _exceeded(c, stats)

    def _stats(self, c: _Check) -> Any:
        lim = self.requests if c.dim == "requests" else self.tokens
        return lim.get_window_stats(c.item, *c.ids)

    # ---- async (Redis: without blocking the event loop) ----------------------------------------------

    async def aacquire(self, checks: list[_Check], cost: int, test_first: bool = False) -> None:
        if self.arequests is None:
            return self.acquire(checks, cost, test_first)
        pipe = self.pipes.pipe() if self.pipes is not None else None
        if pipe is not None:
            await self.aacquire_with_target(pipe, checks, cost, _NO_TARGET, 0, [])
            return None
        if test_first:
            for c in checks:
                ok = await (self.arequests.test(c.item, *c.ids) if c.dim == "requests"
                            else self.atokens.test(c.item, *c.ids, cost=cost))
                if not ok:
                    await self._arefuse(c, checks)
        done: list[_Check] = []
        for c in checks:
            if not await self._ahit(c, cost):
                for d in done:
                    if d.dim == "tokens" or self.kind == "fixed-window":
                        await self._aadd(d, -cost if d.dim == "tokens" else -1)
                await self._arefuse(c, checks)
            done.append(c)

    async def aacquire_with_target(self, pipe: Any, checks: list[_Check], cost: int, target: list[_Check],
                                   tcost: int, reads: list[str]) -> tuple[str, bool, Optional[list[Any]]]:
        """On the pipelined connection, one round trip: take ``checks`` (raising RateLimitExceeded having
        taken nothing when one refuses), then ``target`` (a route's first target: all, or none when
        one is full), and read the ``reads`` keys. (the timestamp the moving windows got, whether the
        target's windows were taken, the values read); no trip and no values (None) when a lease
        of these windows covers the call."""
        lease = self._lease(checks, target)
        if lease is not None:  # leases on, and these are a plan's windows
            for _ in range(4):
                if lease.take(cost, tcost):
                    return lease.stamp, lease.target, None
                busy = lease.busy
                if busy is None:  # this call renews it
                    return await self._arenew(lease, pipe, checks, cost, target, tcost, reads)
                await asyncio.shield(busy)  # another call is renewing it: take from what that trip gets
                if lease.size == 1:  # it got no lease (near a limit): each call asks Redis, side by side
                    break
        return await self._atrip(pipe, checks, cost, target, tcost, reads, 1)

    def take_leased(self, checks: list[_Check], cost: int, target: list[_Check] = _NO_TARGET,
                    tcost: int = 0) -> Optional["_Lease"]:
        """This worker's lease of ``checks`` (and a route's first ``target``) on Redis when it covers
        one more call, now taken from it; else None: :meth:`aacquire_with_target`'s first step, without
        a coroutine (LimitsLayer.forward_enter)."""
        lease = self._lease(checks, target) if self.pipes is not None else None
        return lease if lease is not None and lease.take(cost, tcost) else None

    def _lease(self, checks: list[_Check], target: list[_Check]) -> Optional["_Lease"]:
        """The lease of these windows, made on first use; None with leases off, or for windows that are
        not a plan's (Limiter.order keys them)."""
        leases = self._leases
        rkeys = getattr(checks, "rkeys", None)
        if leases is None or rkeys is None:
            return None
        key = (rkeys, getattr(target, "rkeys", ()))
        lease = leases.get(key)
        if lease is None:
            if len(leases) >= 10000:  # bounded: callers are few; a flood of names is not kept
                leases.clear()
            lease = leases[key] = _Lease()
        return lease

    async def _arenew(self, lease: "_Lease", pipe: Any, checks: list[_Check], cost: int, target: list[_Check],
                      tcost: int, reads: list[str]) -> tuple[str, bool, list[Any]]:
        """A round trip asking for the lease's next size; the calls waiting on it meanwhile then take from it."""
        busy = lease.busy = running_loop().create_future()
        try:
            return await self._atrip(pipe, checks, cost, target, tcost, reads, lease.next_size(), lease)
        except BaseException:
            lease.left, lease.size = 0, 1
            raise
        finally:
            lease.busy = None
            busy.set_result(None)

    async def _atrip(self, pipe: Any, checks: list[_Check], cost: int, target: list[_Check], tcost: int,
                     reads: list[str], n: int, lease: Optional["_Lease"] = None) -> tuple[str, bool, list[Any]]:
        """:meth:`aacquire_with_target`'s round trip, asking for ``n`` calls' worth (a lease) when n > 1."""
        t = time.time()
        now = repr(t)
        stamp = repr(t + LEASE_TTL)
        args: list[Any] = [now, len(checks), len(target), n, stamp]
        self._window_args(args, checks, cost)
        self._window_args(args, target, tcost)
        got = await pipe.script(_scripts()[0], [c.rkey for c in checks] + [c.rkey for c in target] + reads, args)
        if got[0]:
            await self._arefuse(checks[got[0] - 1], checks)
        taken = got[1] == 1
        if got[2] > 1:
            now = stamp
        if lease is not None:
            lease.renewed(got[2], cost, tcost, now, taken)
        return now, taken, got[3:]

    def _window_args(self, args: list[Any], checks: list[_Check], cost: int) -> None:
        moving = "m" if self.kind == "moving-window" else "c"
        for c in checks:
            if c.dim == "requests":
                args += (moving, c.item.amount, self.expiry, 1)
            else:
                args += ("c", c.item.amount, self.expiry, cost)

    def give_back_nowait(self, pipe: Any, checks: list[_Check], cost: int, now: str) -> None:
        """Windows :meth:`aacquire_with_target` took for a target the call never reached, given back
        without waiting (see _GIVE_BACK)."""
        args: list[Any] = [now]
        moving = "m" if self.kind == "moving-window" else "c"
        for c in checks:
            args += (moving, 1) if c.dim == "requests" else ("c", cost)
        pipe.script_later(_scripts()[2], [c.rkey for c in checks], args)

    async def _ahit(self, c: _Check, cost: int) -> bool:
        st = self.astorage
        if c.dim == "requests":
            if self.kind == "moving-window":
                return await st.acquire_entry(c.key, c.item.amount, self.expiry)
            if self.kind == "sliding-window":
                return await self.arequests.hit(c.item, *c.ids)
            cost = 1
        if await st.incr(c.key, self.expiry, amount=cost) <= c.item.amount:
            return True
        await st.incr(c.key, self.expiry, amount=-cost)
        return False

    async def _aadd(self, c: _Check, amount: int) -> None:
        if amount:
            await self.astorage.incr(c.key, self.expiry, amount=amount)

    async def areconcile(self, checks: list[_Check], estimate: int, actual: Optional[int]) -> None:
        if self.arequests is None:
            return self.reconcile(checks, estimate, actual)
        if self.reconcile_nowait(checks, estimate, actual):
            return None
        delta = (actual if actual is not None else 0) - estimate
        for c in checks:
            if c.dim == "tokens":
                await self._aadd(c, delta)

    def reconcile_nowait(self, checks: list[_Check], estimate: int, actual: Optional[int]) -> bool:
        """:meth:`areconcile` on the pipelined connection, sent without waiting for the replies (nothing
        needs them); False where there is none (then await :meth:`areconcile`)."""
        pipe = self.pipes.pipe() if self.pipes is not None else None
        if pipe is None:
            return False
        delta = (actual if actual is not None else 0) - estimate
        if delta:
            for c in checks:
                if c.dim == "tokens":  # summed with the loop's other corrections (redis_pipe.SUM_GAP)
                    pipe.add_later((_add_tokens, c.rkey, self.expiry), delta)
        return True

    async def _arefuse(self, c: _Check, checks: list[_Check]) -> None:
        stats = []
        for x in checks:
            if x.kind == c.kind and x.name == c.name:
                lim = self.arequests if x.dim == "requests" else self.atokens
                stats.append((x, await lim.get_window_stats(x.item, *x.ids)))
        raise _exceeded(c, stats)


def _add_tokens(pipe: Any, rkey: str, expiry: int, total: int) -> None:
    """Summed token corrections of one window sent (limits' own incr-and-expire script)."""
    pipe.script_later(_scripts()[1], [rkey], [expiry, total])


_SCRIPTS: list[Any] = []


def _scripts() -> list[Any]:
    """The acquire-all script, limits' own incr-and-expire (read from the installed library), the give-back."""
    if not _SCRIPTS:
        from importlib.resources import files

        from .redis_pipe import Script

        incr = (files("limits") / "resources" / "redis" / "lua_scripts" / "incr_expire.lua").read_text()
        _SCRIPTS[:] = [Script(_ACQUIRE_ALL), Script(incr), Script(_GIVE_BACK)]
    return _SCRIPTS


def _duration(seconds: float) -> str:
    """A wait as OpenAI writes it in ``x-ratelimit-reset-*``: ``20ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, int(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
    m, s = divmod(int(math.ceil(seconds)), 60)
    return f"{m}m{s}s"


def _exceeded(c: _Check, stats: list[tuple[_Check, Any]]) -> RateLimitExceeded:
    now = time.time()
    headers: list[tuple[str, str]] = []
    wait = 0.0
    for x, (reset, remaining) in stats:
        left = max(0.0, reset - now)
        if x is c:
            wait = left
        headers += [(f"x-ratelimit-limit-{x.dim}", str(x.item.amount)),
                    (f"x-ratelimit-remaining-{x.dim}", str(max(0, int(remaining)))),
                    (f"x-ratelimit-reset-{x.dim}", _duration(left))]
    return RateLimitExceeded(
        f"Rate limit reached for {c.label}. Please try again in {_duration(wait)}.",
        limit=f"{c.kind}:{c.name} {c.dim}", retry_after=wait, headers=headers)


def limiter_for(mesh: Any) -> Limiter:
    """The mesh's one :class:`Limiter` (every LLM's layer shares its windows)."""
    lim = getattr(mesh, "_limiter", None)
    if lim is None:
        lim = mesh._limiter = Limiter(mesh)
    return lim


class LimitsLayer(Layer):
    name = "limits"
    # a pass-through call is counted and settled by forward hooks: in memory with nothing awaited, on
    # Redis with nothing awaited while a lease covers it (else a round trip, chain.Await); a route's call
    # on Redis takes its first target's windows in the same trip (_route_enter)
    forward_hooks = True

    def __init__(self, mesh: Any, llm: Any):
        self.cfg = mesh.config.limits
        self.limiter = limiter_for(mesh)
        conn = llm.id.split(":", 2)[1] if llm.id.count(":") >= 2 else ""
        # the LLM's own windows, fixed for its life; the caller's are added per call
        self.fixed = self._checks("llm", llm.id, self.cfg.llms.get(llm.id)) + \
            self._checks("connection", conn, self.cfg.connections.get(conn))
        self._by_scope: dict[tuple[Any, Any, Any], list[_Check]] = {}
        self.mesh, self.llm, self.llm_id = mesh, llm, llm.id
        self.route = getattr(llm, "route", None)
        # found on the first route call (the chains are built after this layer): the limits layer of
        # each target, the budgets layer of this LLM's chain (see _route_enter)
        self._partners: Optional[tuple[list[Optional["LimitsLayer"]], Any]] = None

    def _checks(self, kind: str, name: Optional[str], rate: Any) -> list[_Check]:
        if rate is None or name is None:
            return []
        out = []
        if rate.rpm is not None:
            out.append(_Check("requests", kind, name, self.limiter.item("requests", rate.rpm)))
        if rate.tpm is not None:
            out.append(_Check("tokens", kind, name, self.limiter.item("tokens", rate.tpm)))
        return out

    def plan(self, call: Any) -> tuple[list[_Check], bool, bool]:
        """The call's windows in the order they are hit, whether to test them first, whether any
        counts tokens; worked out once per caller (key, user, team)."""
        s = call.scope
        if s.extra and s.extra.get("route"):
            return self.route_plan()
        k: Any = (s.key, s.user, s.team)
        got = self._by_scope.get(k)
        if got is None:
            cfg = self.cfg
            key_rate = cfg.keys.get(s.key) if s.key is not None else None
            if key_rate is None and s.key is not None:
                key_rate = cfg.default
            got = self._plan(self._checks("key", s.key, key_rate)
                             + self._checks("user", s.user, cfg.users.get(s.user or ""))
                             + self._checks("team", s.team, cfg.teams.get(s.team or "")) + self.fixed)
            if len(self._by_scope) < 10000:  # bounded: callers are few; a flood of names is not cached
                self._by_scope[k] = got
        return got

    def _plan(self, checks: list[_Check]) -> tuple[list[_Check], bool, bool]:
        ordered, test_first = self.limiter.order(checks)
        return ordered, test_first, any(c.dim == "tokens" for c in checks)

    def route_plan(self) -> tuple[list[_Check], bool, bool]:
        """:meth:`plan` of the calls a route makes to this LLM (only its own windows)."""
        got = self._by_scope.get("route target")  # type: ignore[call-overload]
        if got is None:
            got = self._by_scope["route target"] = self._plan(self.fixed)  # type: ignore[index]
        return got

    def checks(self, call: Any) -> list[_Check]:
        return self.plan(call)[0]

    # ---- the entry points ----------------------------------------------------------------------------

    def _start(self, call: Any) -> tuple[list[_Check], int]:
        checks, test_first, tokens = self.plan(call)
        call.notes["limits.test_first"] = test_first
        return checks, (estimate_tokens(call) if tokens else 0)

    def _acquire(self, call: Any, checks: list[_Check], cost: int) -> bool:
        """Count the call (raising RateLimitExceeded when refused); False: the store is down and the
        call goes on unchecked (state.on_failure: open)."""
        test_first = call.notes["limits.test_first"]
        if not self.limiter.remote:  # in memory: no outage possible
            self.limiter.acquire(checks, cost, test_first)
            return True
        return guarded(self.cfg_all, "rate limits",
                       lambda: self.limiter.acquire(checks, cost, test_first) or True, False)

    async def _aacquire_guarded(self, call: Any, checks: list[_Check], cost: int) -> bool:
        test_first = call.notes["limits.test_first"]
        if not self.limiter.remote:
            self.limiter.acquire(checks, cost, test_first)
            return True

        async def go() -> bool:
            await self.limiter.aacquire(checks, cost, test_first)
            return True
        return await aguarded(self.cfg_all, "rate limits", go, False)

    def call(self, call: Any, nxt: Any) -> Any:
        if call.op in _SKIP:
            return nxt()
        checks, cost = self._start(call)
        if not checks:
            return nxt()
        if not self._acquire(call, checks, cost):
            return nxt()  # store down, failing open
        try:
            result = nxt()
        except BaseException:
            self._settle(checks, cost, None)
            raise
        self._settle(checks, cost, _tokens(getattr(result, "usage", None)))
        return result

    # ---- a pass-through call (Layer.forward_hooks) ----------------------------------------------------

    def forward_enter(self, call: Any) -> Any:
        """Count the call: in memory at once; on Redis from this worker's lease when it covers the call,
        else in a round trip (chain.Await). The state: what settles the call's tokens (None: nothing)."""
        limiter = self.limiter
        if limiter.remote:  # (a route's windows are taken with its first target's on Redis only)
            taken = _TAKEN.get()
            if taken is not None and taken.llm_id == self.llm_id:
                taken.llm_id = None  # this target's windows were taken with its route's (see _route_enter)
                return taken
        checks, test_first, tokens = self.plan(call)
        if not checks:
            return None
        cost = estimate_tokens(call) if tokens else 0
        if not limiter.remote:  # no outage possible, nothing to await: (limiter, checks, the estimate)
            limiter.acquire(checks, cost, test_first)
            return (limiter, checks, cost) if cost else None
        if self.route is not None and limiter.pipes is not None:
            pipe = limiter.pipes.pipe()
            if pipe is not None:  # a route on Redis: its windows and its first target's in one trip
                return self._route_enter(call, pipe, checks, cost)
        if limiter.take_leased(checks, cost):
            return _SettleLater(self, checks, cost)
        call.notes["limits.test_first"] = test_first
        return Await(self._aenter(call, checks, cost))

    async def _aenter(self, call: Any, checks: list[_Check], cost: int) -> Optional["_SettleLater"]:
        if not await self._aacquire_guarded(call, checks, cost):
            return None  # the store is down and the call goes on unchecked (state.on_failure: open)
        return _SettleLater(self, checks, cost)

    def forward_fail(self, call: Any, state: Any, error: BaseException) -> None:
        if type(state) is tuple:  # in memory: the attempt used no tokens, its estimate given back
            return _reconciled(state, None, False)
        if type(state) is _RouteTaken:
            return state.over(None)
        if type(state) is _Taken:
            state.failed = True  # the route's windows are settled by its layer (_RouteTaken)
        if state is not None:
            self._settle_later(state.checks, state.cost, None)

    def forward_done(self, call: Any, state: Any, result: Any) -> Any:
        # the tokens are reconciled when the server has read the usage (usage_of.py); a route's target
        # taken with it is reconciled by the route's layer (_RouteTaken)
        if type(state) is tuple:
            return on_forward_end(result, _reconciled, state)
        if type(state) is _RouteTaken:
            state.end()
            return on_forward_end(result, _RouteTaken.on_end, state) if state.cost or state.tcost else result
        if state is None or not state.cost or type(state) is _Taken:
            return result
        return on_forward_end(result, _SettleLater.on_end, state)

    async def acall(self, call: Any, nxt: Any) -> Any:
        if call.op in _SKIP:
            return await nxt()
        if call.op == "forward":
            return await ahooked(self, call, nxt)
        taken = _TAKEN.get()
        if taken is not None and taken.llm_id == self.llm_id:
            return await self._acall_taken(taken, nxt)
        checks, cost = self._start(call)
        if not checks:
            return await nxt()
        if not self.limiter.remote:  # in memory: taken at once (no coroutine to await)
            self.limiter.acquire(checks, cost, call.notes["limits.test_first"])
        else:
            if self.route is not None and self.limiter.pipes is not None:
                pipe = self.limiter.pipes.pipe()
                if pipe is not None:  # a route on Redis: its windows and its first target's in one trip
                    return await self._acall_route(call, nxt, pipe, checks, cost)
            if not await self._aacquire_guarded(call, checks, cost):
                return await nxt()
        try:
            result = await nxt()
        except BaseException:
            await self._asettle(checks, cost, None)
            raise
        await self._asettle(checks, cost, _tokens(getattr(result, "usage", None)))
        return result

    # ---- a route's call on Redis: one round trip before it, none waited for after it ----------------

    def _route_enter(self, call: Any, pipe: Any, checks: list[_Check], cost: int) -> Any:
        """The route's windows, those of the target it will call first and the budgets' spend so far,
        in one round trip (each layer asking for its own made three, one after another: issue 24), or
        none when this worker's lease covers them. The route is told to call that target first
        (Route.preset); the target's own layer, finding its windows taken (_TAKEN), counts nothing
        again. Another target (a fallback) is counted by its own layer, as before; a first target the
        route did not reach after all gets its windows back. A :class:`_RouteTaken` (or chain.Await of
        one; None when the store is down and the call goes on unchecked)."""
        route = self.route
        order = route.order(call.scope.sticky_key)
        target, tcost = self._first_target(call, order[0], cost)
        budgets = self._budget_reads(call)
        lease = self.limiter.take_leased(checks, cost, target, tcost)
        if lease is not None:  # no trip: the budgets read their spend themselves (or know it: _far)
            return _RouteTaken(self, pipe, order, checks, cost, target, tcost, lease.stamp, lease.target)
        return Await(self._aroute_enter(call, pipe, order, checks, cost, target, tcost, budgets))

    async def _aroute_enter(self, call: Any, pipe: Any, order: list[int], checks: list[_Check], cost: int,
                            target: list[_Check], tcost: int, budgets: Optional[tuple[Any, int, list[str]]]) -> Any:
        async def acquire() -> Any:
            return await self.limiter.aacquire_with_target(pipe, checks, cost, target, tcost,
                                                           budgets[2] if budgets is not None else [])
        got = await aguarded(self.cfg_all, "rate limits", acquire, None)
        if got is None:
            return None  # store down, failing open (the target's layer and the budgets ask again)
        now, target_taken, values = got
        if budgets is not None and values is not None:  # for BudgetsLayer, which checks them
            call.notes["budgets.spent"] = (budgets[0], budgets[1], values)
        return _RouteTaken(self, pipe, order, checks, cost, target, tcost, now, target_taken)

    async def _acall_route(self, call: Any, nxt: Any, pipe: Any, checks: list[_Check], cost: int) -> Any:
        """A route's call other than a pass-through (those take the forward hooks), as :meth:`_route_enter`."""
        state = self._route_enter(call, pipe, checks, cost)
        if type(state) is Await:
            state = await state.work
        if state is None:
            return await nxt()
        try:
            result = await nxt()
        except BaseException:
            state.over(None)
            raise
        state.end()
        state.over(_tokens(getattr(result, "usage", None)))
        return result

    def _route_over(self, checks: list[_Check], cost: int, taken: Optional[_Taken], actual: Optional[int]) -> None:
        """After a route's call: the token estimates replaced by ``actual``, sent without waiting."""
        self._settle_later(checks, cost, actual)
        # only a target called, and not failed (a failed attempt gave its tokens back itself; one never
        # called gets all its windows back in _RouteTaken.end)
        if taken is not None and taken.llm_id is None and not taken.failed:
            self._settle_later(taken.checks, taken.cost, actual)

    async def _acall_taken(self, taken: _Taken, nxt: Any) -> Any:
        """This target's windows were taken with its route's (see _route_enter)."""
        taken.llm_id = None  # consumed: another attempt at this target (a later pass) counts again
        try:
            return await nxt()
        except BaseException as e:
            self.forward_fail(None, taken, e)  # the attempt used no tokens: its estimate given back now
            raise

    def _first_target(self, call: Any, i: int, cost: int) -> tuple[list[_Check], int]:
        """The windows of target ``i`` to take before the route's call, and its token estimate: none
        when it has no limits, or when its breaker is not known to be closed (the route may skip it)."""
        layer = self._found()[0][i]
        if layer is None:
            return [], 0
        breakers = self.route.breakers
        if breakers is not None and breakers[i].known() != CLOSED:
            return [], 0
        target, _test_first, tokens = layer.route_plan()
        return target, (cost or estimate_tokens(call)) if tokens else 0

    def _budget_reads(self, call: Any) -> Optional[tuple[Any, int, list[str]]]:
        budgets = self._found()[1]
        return budgets.spend_reads(call, self.limiter.pipes) if budgets is not None else None

    def _found(self) -> tuple[list[Optional["LimitsLayer"]], Any]:
        got = self._partners
        if got is None:
            chain = self.mesh._chain(self.llm)  # noqa: SLF001 - the mesh's own chain cache
            budgets = next((x for x in chain if x.name == "budgets" and hasattr(x, "spend_reads")), None)
            targets = [next((x for x in self.mesh._chain(t) if isinstance(x, LimitsLayer)), None)  # noqa: SLF001
                       for t in self.route.targets]
            got = self._partners = (targets, budgets)
        return got

    def stream(self, call: Any, nxt: Any) -> Any:
        checks, cost = self._start(call)
        if not checks:
            return nxt()
        if not self._acquire(call, checks, cost):
            return nxt()
        return self._watch(nxt(), checks, cost)

    def _watch(self, events: Any, checks: list[_Check], cost: int) -> Any:
        used = None
        try:
            for ev in events:
                u = getattr(ev, "usage", None)
                if u is not None and hasattr(ev, "finish_reason"):
                    used = _tokens(u)
                yield ev
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()
            self._settle(checks, cost, used)

    def astream(self, call: Any, nxt: Any) -> Any:
        return self._awatch(call, nxt)

    async def _awatch(self, call: Any, nxt: Any) -> Any:
        checks, cost = self._start(call)
        if checks and not await self._aacquire_guarded(call, checks, cost):
            checks = []
        events = nxt()
        used = None
        try:
            async for ev in events:
                u = getattr(ev, "usage", None)
                if u is not None and hasattr(ev, "finish_reason"):
                    used = _tokens(u)
                yield ev
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
            if checks:
                await self._asettle(checks, cost, used)

    _pending: set[Any] = set()

    def _settle_later(self, checks: list[_Check], cost: int, actual: Optional[int]) -> None:
        if not self.limiter.remote:  # in memory: at once, nothing waits
            self._settle(checks, cost, actual)
        elif not self.limiter.reconcile_nowait(checks, cost, actual):
            self._later(self._asettle(checks, cost, actual))

    def _later(self, work: Any) -> None:
        """Run ``work`` on the loop after the current step (a stream's end: the server is finishing
        its answer; the correction need not delay it). Tasks are kept until done (asyncio holds weak refs)."""
        import asyncio

        task = asyncio.get_running_loop().create_task(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    @property
    def cfg_all(self) -> Any:
        return self.limiter.config

    def _settle(self, checks: list[_Check], cost: int, actual: Optional[int]) -> None:
        if not cost:
            return
        try:
            self.limiter.reconcile(checks, cost, actual)
        except Exception as e:  # noqa: BLE001 - the call is over: a store outage only loses the correction
            if not is_outage(e):
                raise
            log.warning("could not reconcile token limits (%s)", type(e).__name__)

    async def _asettle(self, checks: list[_Check], cost: int, actual: Optional[int]) -> None:
        if not cost:
            return
        try:
            await self.limiter.areconcile(checks, cost, actual)
        except Exception as e:  # noqa: BLE001
            if not is_outage(e):
                raise
            log.warning("could not reconcile token limits (%s)", type(e).__name__)


_tokens = tokens_of


class _SettleLater:
    """A pass-through call's reconciliation, called by the server as ``end(usage, ok)``: one small
    object rather than a closure and its cells."""

    __slots__ = ("layer", "checks", "cost")

    def __init__(self, layer: LimitsLayer, checks: list[_Check], cost: int):
        self.layer, self.checks, self.cost = layer, checks, cost

    def on_end(self, usage: Any, ok: Optional[bool]) -> None:
        self.layer._settle_later(self.checks, self.cost, tokens_of(usage))


class _RouteTaken:
    """A route's call on Redis whose windows (and its first target's) are taken (LimitsLayer._route_enter):
    :meth:`end` when the route's call is over, then :meth:`over` (or :meth:`on_end`, the pass-through's
    callback) with what it used; on a failure, :meth:`over` alone, which ends it too."""

    __slots__ = ("layer", "pipe", "checks", "cost", "tcost", "taken", "marks", "route", "ended")

    def __init__(self, layer: LimitsLayer, pipe: Any, order: list[int], checks: list[_Check], cost: int,
                 target: list[_Check], tcost: int, now: str, target_taken: bool):
        route = layer.route
        self.layer, self.pipe, self.route, self.checks, self.cost, self.tcost = layer, pipe, route, checks, cost, tcost
        self.taken = _Taken(route.ids[order[0]], target, tcost, now) if target_taken else None
        self.marks = (route.preset(order), _TAKEN.set(self.taken))
        self.ended = False

    def end(self) -> None:
        """The route's call is over: its first pass and _TAKEN unset; a first target it never called
        gets its windows back."""
        if self.ended:
            return
        self.ended = True
        _TAKEN.reset(self.marks[1])
        self.route.unset(self.marks[0])
        taken = self.taken
        if taken is not None and taken.llm_id is not None:  # the route never called it: not counted
            self.layer.limiter.give_back_nowait(self.pipe, taken.checks, taken.cost, taken.now)
            taken.failed = True

    def over(self, actual: Optional[int]) -> None:
        """A failed call (None) or one that used ``actual`` tokens: the estimates replaced, sent without
        waiting; a failure ends the call here, after what it had taken is settled as it saw it."""
        self.layer._route_over(self.checks, self.cost, self.taken, actual)
        self.end()

    def on_end(self, usage: Any, ok: Optional[bool]) -> None:
        self.over(tokens_of(usage))


class _Lease:
    """Calls one worker may make on a set of Redis windows without asking Redis again.

    Far from its limits (each window has room for LEASE_ROOM times what the lease takes), a round trip
    takes ``n`` calls' worth of every window at once, and the next n - 1 calls of this worker on those
    windows within LEASE_TTL are counted here (the script's round trip and Redis' own work were most
    of what a policy call cost the gateway: issue 24). ``n`` starts at 1 (exactly one call, as without
    leases), doubles each time a lease is used up before its deadline, up to LEASE_MAX, and falls back
    to what was used when one expires. Near a limit the script grants one call's worth: every call
    asks Redis, exact across workers as before. What a lease takes counts in Redis at once (its
    moving-window entries until its deadline), so leases never let more through than a limit; calls a
    lease covered but never came are counted until their window ends, at most 1/LEASE_ROOM of what
    was left. ``state.lease: false`` turns them off."""

    __slots__ = ("left", "tokens", "ttokens", "until", "size", "stamp", "target", "busy")

    def __init__(self) -> None:
        self.left = 0  # calls left
        self.tokens = self.ttokens = 0  # token estimates left for the windows and for the target's
        self.until = 0.0  # its deadline (time.monotonic)
        self.size = 1  # calls the last renewal took
        self.stamp = ""  # what its moving-window entries were stamped (a give-back removes one by it)
        self.target = False  # whether it took a route target's windows too
        self.busy: Optional[asyncio.Future[None]] = None  # a renewal in flight: done when it ends

    def take(self, cost: int, tcost: int) -> bool:
        if self.left and self.tokens >= cost and self.ttokens >= tcost and time.monotonic() < self.until:
            self.left -= 1
            self.tokens -= cost
            self.ttokens -= tcost
            return True
        return False

    def next_size(self) -> int:
        if time.monotonic() < self.until:  # used up before its deadline: ask for more
            return min(self.size * 2, LEASE_MAX)
        return max(1, self.size - self.left)  # expired: what was used

    def renewed(self, n: int, cost: int, tcost: int, stamp: str, target: bool) -> None:
        """A round trip took ``n`` calls' worth; this call is one of them."""
        self.size, self.left = n, n - 1
        self.tokens, self.ttokens = cost * (n - 1), tcost * (n - 1)
        self.until = time.monotonic() + LEASE_TTL
        self.stamp, self.target = stamp, target


def _reconciled(state: tuple[Limiter, list[_Check], int], usage: Any, ok: Optional[bool]) -> None:
    """A pass-through call in memory is over (its forward hooks' state: the limiter, the windows, the
    estimate): the estimate replaced with the tokens used, at once (no store to be down or awaited)."""
    limiter, checks, cost = state
    limiter.reconcile(checks, cost, tokens_of(usage))


def make_layer(mesh: Any, llm: Any) -> Optional[LimitsLayer]:
    """The factory named in :data:`~.chain.LAYERS`: a layer only for LLMs some limit can apply to."""
    cfg = mesh.config.limits
    if not (cfg.default or cfg.keys or cfg.users or cfg.teams or cfg.llms or cfg.connections):
        return None
    return LimitsLayer(mesh, llm)
