"""HTTP for the benchmark scripts: Basic credentials, and the Docker Bearer-token flow
(on a 401 challenge: fetch a token for the challenged scope with the Basic login, cache
it per scope, retry)."""
import base64, json, re, ssl, threading, urllib.error, urllib.parse, urllib.request

class Http:
    def __init__(self, user=None, password=None, cafile=None):
        self.basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode() if user else None
        self.ctx = ssl.create_default_context(cafile=cafile) if cafile else None
        self.tokens, self.bearer, self.lock = {}, False, threading.Lock()

    def _token(self, challenge, scope):
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        scope = scope or params.get("scope", "")
        with self.lock:
            if scope in self.tokens:
                return self.tokens[scope]
        query = urllib.parse.urlencode({"service": params.get("service", ""), "scope": scope.split()}, doseq=True)
        req = urllib.request.Request(f"{params['realm']}?{query}", headers={"Authorization": self.basic} if self.basic else {})
        token = json.load(urllib.request.urlopen(req, context=self.ctx))["token"]
        with self.lock:
            self.tokens[scope] = token
        return token

    def open(self, method, url, data=None, headers=None, scope=None):
        """`scope`: the token scope this request needs, when the registry wants tokens."""
        headers = dict(headers or {})
        if self.bearer and scope in self.tokens:
            headers["Authorization"] = "Bearer " + self.tokens[scope]
        elif self.basic and not self.bearer:
            headers["Authorization"] = self.basic
        try:
            return urllib.request.urlopen(urllib.request.Request(url, data=data, method=method, headers=headers), context=self.ctx)
        except urllib.error.HTTPError as e:
            challenge = e.headers.get("WWW-Authenticate", "")
            if e.code != 401 or not challenge.startswith("Bearer") or hasattr(data, "read"):
                raise
            self.bearer = True
            headers["Authorization"] = "Bearer " + self._token(challenge, scope)
            return urllib.request.urlopen(urllib.request.Request(url, data=data, method=method, headers=headers), context=self.ctx)
