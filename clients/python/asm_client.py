"""A Python client for ASM (Agent Session Manager), standard library only (Python 3.8+).

    from asm_client import AsmClient, NotFound

    asm = AsmClient("http://127.0.0.1:8080", api_key="...")
    session = asm.create_session("claude", permission_mode="default")
    run = asm.submit_run(session["id"], "Say hello")
    for event in asm.events(run["id"]):          # SSE, resumed with Last-Event-ID if the connection drops
        if event["kind"] == "approval_requested":
            asm.decide_approval(event["payload"]["approval_id"], "allow")
    print(asm.get_run(run["id"])["result"]["text"])

Every error answer of the service ({"error": {kind, domain, message, retryable, details}}, the table in
src/errors/kinds.ts) is raised as an AsmError subclass chosen by its kind; see ERROR_CLASSES.
"""

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request

__all__ = [
    "AsmClient",
    "AsmError",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "TooManyRequests",
    "Unavailable",
    "RunFailed",
    "TERMINAL_KINDS",
]

# Every run ends with exactly one of these events, and nothing after it (README "Events and results").
TERMINAL_KINDS = frozenset(["result", "error", "run_completed"])
TERMINAL_RUN_STATES = frozenset(["completed", "failed", "interrupted"])


class AsmError(Exception):
    """An error answer of the service, or the error of a run."""

    def __init__(self, kind, message, domain=None, retryable=False, details=None, status=None):
        super().__init__("{}: {}".format(kind, message))
        self.kind = kind
        self.message = message
        self.domain = domain
        self.retryable = retryable
        self.details = details or {}
        self.status = status

    @property
    def field(self):
        """The request field a 400 names (details.field), if any."""
        return self.details.get("field")


class BadRequest(AsmError):
    """400 or 413: the request names a field that is wrong (see .field)."""


class Unauthorized(AsmError):
    """401: no key, or a key the service does not know."""


class Forbidden(AsmError):
    """403: the key's tenant or role may not do this."""


class NotFound(AsmError):
    """404: no such session, run, approval or lane for this tenant."""


class Conflict(AsmError):
    """409: the resource is not in a state for this (a run already ended, an approval already decided)."""


class TooManyRequests(AsmError):
    """429: at capacity, a full queue, a quota or a rate limit; retry later when .retryable."""


class Unavailable(AsmError):
    """503: the service is not ready or shutting down."""


class RunFailed(AsmError):
    """A run or a CLI failed (5xx kinds; also the error of a run's `error` event)."""


# kind -> exception class: every kind of src/errors/kinds.ts (a test checks that none is missing).
ERROR_CLASSES = {
    "bad_request": BadRequest,
    "config_invalid": BadRequest,
    "payload_too_large": BadRequest,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "not_found": NotFound,
    "conflict": Conflict,
    "user_cancelled": Conflict,
    "approval_denied": Conflict,
    "guardrail_blocked": Forbidden,
    "at_capacity": TooManyRequests,
    "queue_full": TooManyRequests,
    "rate_limit": TooManyRequests,
    "quota_exceeded": TooManyRequests,
    "not_ready": Unavailable,
    "shutting_down": Unavailable,
    "cli_not_found": RunFailed,
    "connection_failed": RunFailed,
    "timeout": RunFailed,
    "idle_timeout": RunFailed,
    "parse_error": RunFailed,
    "auth_error": RunFailed,
    "buffer_overflow": RunFailed,
    "transport_error": RunFailed,
    "provider_error": RunFailed,
    "node_lost": RunFailed,
    "unknown": AsmError,
}


def error_from_body(body, status=None):
    """The exception for an error body {"error": {...}} (or a run's error payload {kind, message, ...})."""
    error = body.get("error", body) if isinstance(body, dict) else {}
    if not isinstance(error, dict):
        error = {}
    kind = error.get("kind", "unknown")
    cls = ERROR_CLASSES.get(kind, AsmError)
    return cls(
        kind,
        error.get("message", "HTTP {}".format(status)),
        domain=error.get("domain"),
        retryable=bool(error.get("retryable", False)),
        details=error.get("details"),
        status=status,
    )


class AsmClient:
    """One ASM service. Methods return the JSON records of the API (README "HTTP API") as dicts."""

    def __init__(self, base_url, api_key=None, timeout=60.0, stream_timeout=120.0, max_resumes=5):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        # The SSE stream sends a ping every ASM_WS_HEARTBEAT_MS (30 s by default); a longer silence is a dead link.
        self.stream_timeout = stream_timeout
        self.max_resumes = max_resumes

    # -- transport -----------------------------------------------------------------------------

    def _url(self, path, query=None):
        query = {k: v for k, v in (query or {}).items() if v is not None}
        return self.base_url + path + ("?" + urllib.parse.urlencode(query) if query else "")

    def _headers(self, extra=None):
        headers = {"accept": "application/json"}
        if self.api_key:
            headers["authorization"] = "Bearer " + self.api_key
        headers.update(extra or {})
        return headers

    def request(self, method, path, body=None, query=None):
        """One JSON request; returns the parsed body (None when empty) or raises the AsmError of the answer."""
        data = None
        headers = self._headers()
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["content-type"] = "application/json"
        req = urllib.request.Request(self._url(path, query), data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:
                text = response.read().decode("utf-8")
        except urllib.error.HTTPError as answer:
            raise _http_error(answer) from None
        return json.loads(text) if text else None

    def _bytes(self, method, path, data=None, query=None, accept="application/octet-stream"):
        """One request whose body (bytes, or a binary file object, sent in chunks) and answer are raw bytes."""
        headers = self._headers({"accept": accept})
        if data is not None:
            headers["content-type"] = "application/octet-stream"
        req = urllib.request.Request(self._url(path, query), data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:
                return response.read(), response.headers.get("content-type", "")
        except urllib.error.HTTPError as answer:
            raise _http_error(answer) from None

    @staticmethod
    def _path_id(value):
        return urllib.parse.quote(str(value), safe="")

    # -- sessions --------------------------------------------------------------------------------

    def create_session(self, provider, **options):
        """POST /v1/sessions: options are the README's (cwd, model, permission_mode, queue, lane, metadata, ...)."""
        return self.request("POST", "/v1/sessions", dict(options, provider=provider))

    def get_session(self, session_id):
        return self.request("GET", "/v1/sessions/" + self._path_id(session_id))

    def list_sessions(self, limit=None, cursor=None):
        """One page: {"sessions": [...], "next_cursor": ...}; pass next_cursor back as cursor."""
        return self.request("GET", "/v1/sessions", query={"limit": limit, "cursor": cursor})

    def close_session(self, session_id):
        return self.request("DELETE", "/v1/sessions/" + self._path_id(session_id))

    # -- runs ------------------------------------------------------------------------------------

    def submit_run(self, session_id, prompt, wait=False, **options):
        """POST /v1/sessions/{id}/runs: the queued run, or with wait=True the finished one (if it ends in time)."""
        body = dict(options, prompt=prompt)
        if wait:
            body["wait"] = True
        return self.request("POST", "/v1/sessions/{}/runs".format(self._path_id(session_id)), body)

    def get_run(self, run_id):
        return self.request("GET", "/v1/runs/" + self._path_id(run_id))

    def list_runs(self, session_id, limit=None, cursor=None):
        return self.request("GET", "/v1/sessions/{}/runs".format(self._path_id(session_id)), query={"limit": limit, "cursor": cursor})

    def interrupt(self, run_id):
        """POST /v1/runs/{id}/interrupt: a queued run ends interrupted, an active one is stopped (user_cancelled)."""
        return self.request("POST", "/v1/runs/{}/interrupt".format(self._path_id(run_id)))

    def wait(self, run_id, on_event=None):
        """Follows the run's events to its terminal one (calling on_event with each), then returns the run."""
        for event in self.events(run_id):
            if on_event:
                on_event(event)
        return self.get_run(run_id)

    def event_page(self, run_id, after=0, limit=None):
        """GET /v1/runs/{id}/events as JSON: {"events", "next_after", "run_state"}."""
        return self.request("GET", "/v1/runs/{}/events".format(self._path_id(run_id)), query={"after": after, "limit": limit})

    def events(self, run_id, last_event_id=None):
        """The run's events over SSE, from after last_event_id (a seq; None: from the start) to its terminal event.

        A stream that breaks before the terminal event is reopened with Last-Event-ID set to the last
        event received, so each event is yielded once and in order (at most max_resumes times in a row).
        """
        last = last_event_id
        resumes = 0
        while True:
            headers = self._headers({"accept": "text/event-stream"})
            if last is not None:
                headers["last-event-id"] = str(last)
            req = urllib.request.Request(self._url("/v1/runs/{}/events".format(self._path_id(run_id))), headers=headers)
            try:
                response = urllib.request.urlopen(req, timeout=self.stream_timeout)
            except urllib.error.HTTPError as answer:
                raise _http_error(answer) from None
            try:
                with response:
                    for event_id, event in _sse_events(response):
                        last = event_id
                        resumes = 0
                        yield event
                        if event["kind"] in TERMINAL_KINDS:
                            return
            except (OSError, http.client.HTTPException):
                pass  # the link broke (reset, timeout, a cut chunk): resume below
            # The server ends the stream at once when the run had ended before the cursor: nothing more comes.
            if self.get_run(run_id)["state"] in TERMINAL_RUN_STATES and self._nothing_after(run_id, last):
                return
            resumes += 1
            if resumes > self.max_resumes:
                raise AsmError("transport_error", "the event stream of run {} kept ending before its terminal event".format(run_id), domain="transport", retryable=True)

    def _nothing_after(self, run_id, last):
        return not self.event_page(run_id, after=last or 0, limit=1)["events"]

    # -- workspace files and diffs (README "Workspaces and files") -----------------------------------

    def _files_path(self, session_id, path=None):
        base = "/v1/sessions/{}/files".format(self._path_id(session_id))
        return base if path is None else base + "/" + urllib.parse.quote(path.lstrip("/"), safe="/")

    def put_file(self, session_id, path, data):
        """PUT one file (bytes, or a binary file object) at path in the session's workspace: {"files", "directories", "bytes"}."""
        body, _ = self._bytes("PUT", self._files_path(session_id, path), data=data, accept="application/json")
        return json.loads(body.decode("utf-8"))

    def upload_archive(self, session_id, archive, path=None):
        """POST a tar or tar.gz (bytes, or a binary file object) unpacked into the workspace (or its folder path)."""
        body, _ = self._bytes("POST", self._files_path(session_id), data=archive, query={"path": path}, accept="application/json")
        return json.loads(body.decode("utf-8"))

    def list_files(self, session_id, path=None, limit=None, cursor=None):
        """One page of a folder: {"path", "entries": [{name, type, size, modified_at}], "next_cursor"}."""
        return self.request("GET", self._files_path(session_id), query={"path": path, "limit": limit, "cursor": cursor})

    def get_file(self, session_id, path):
        """A file's bytes."""
        return self._bytes("GET", self._files_path(session_id, path))[0]

    def get_archive(self, session_id, path=None):
        """A folder of the workspace (the workspace itself by default) as tar bytes."""
        return self._bytes("GET", self._files_path(session_id), query={"path": path}, accept="application/x-tar")[0]

    def run_diff(self, run_id, patch=False):
        """What the run changed: {"summary", "patch_truncated", "computed_at"}, or with patch=True the unified patch (str)."""
        return self._diff("/v1/runs/{}/diff".format(self._path_id(run_id)), patch)

    def session_diff(self, session_id, patch=False):
        """What the session's runs changed since its first run, as run_diff."""
        return self._diff("/v1/sessions/{}/diff".format(self._path_id(session_id)), patch)

    def _diff(self, path, patch):
        if not patch:
            return self.request("GET", path)
        return self._bytes("GET", path, accept="text/x-diff")[0].decode("utf-8")

    # -- approvals -------------------------------------------------------------------------------

    def list_approvals(self, session_id, limit=None, cursor=None):
        """The session's pending approvals: {"approvals": [...], "next_cursor": ...}."""
        return self.request("GET", "/v1/sessions/{}/approvals".format(self._path_id(session_id)), query={"limit": limit, "cursor": cursor})

    def get_approval(self, approval_id):
        return self.request("GET", "/v1/approvals/" + self._path_id(approval_id))

    def decide_approval(self, approval_id, decision, reason=None):
        """decision: "allow", "allow_for_session" or "deny". Conflict if it was already decided (or timed out)."""
        body = {"decision": decision}
        if reason is not None:
            body["reason"] = reason
        return self.request("POST", "/v1/approvals/" + self._path_id(approval_id), body)

    # -- the service -----------------------------------------------------------------------------

    def providers(self):
        return self.request("GET", "/v1/providers")

    def health(self):
        return self.request("GET", "/healthz")


def _http_error(answer):
    text = answer.read().decode("utf-8", "replace")
    try:
        body = json.loads(text)
    except ValueError:
        body = {"error": {"kind": "unknown", "message": text or answer.reason}}
    return error_from_body(body, status=answer.code)


def _sse_events(response):
    """(id, event) pairs of an SSE response: `id:`, `event:` and `data:` lines, a blank line ends one; `:` lines are pings."""
    event_id, data = None, []
    for raw in response:
        line = raw.decode("utf-8").rstrip("\r\n")
        if line == "":
            if data:
                yield (int(event_id) if event_id is not None else None), json.loads("\n".join(data))
            event_id, data = None, []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "id":
                event_id = value
            elif field == "data":
                data.append(value)
