"""moto's AWS emulator as image-reflector's tests run it, with three things moto leaves out.

moto (PyPI `moto[server]`) plays STS and ECR for real: AssumeRoleWithWebIdentity issues
session credentials, ECR GetAuthorizationToken issues a token, and with
INITIAL_NO_AUTH_ACTION_COUNT=0 ECR refuses requests not signed with keys moto issued.
This launcher wraps moto's own WSGI application and adds:

1. Validation of web identity tokens, as STS does it with an IAM OIDC provider: when
   MOTO_TEST_OIDC_ISSUER is set, AssumeRoleWithWebIdentity requires an RS256 JWT signed
   by the key in MOTO_TEST_OIDC_KEY (PEM), with that issuer, the audience
   sts.amazonaws.com and an expiry in the future (else InvalidIdentityToken), whose
   subject the role's trust policy admits (MOTO_TEST_OIDC_TRUST: JSON, role ARN to a list
   of subjects; else AccessDenied).
2. ECR Public's GetAuthorizationToken, which moto does not implement: a token for
   AWS:<MOTO_TEST_ECR_PUBLIC_PASSWORD>, expiring in 12 hours.
3. Counts of the calls tests assert on, at GET /_test/counts (JSON).

It listens on 127.0.0.1 on a free port, prints "listening on 127.0.0.1:PORT", and exits
when its standard input closes (so a test that dies takes it along).
"""

import base64
import io
import json
import os
import sys
import threading
import time
import urllib.parse

from werkzeug.serving import make_server

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

COUNTS = {}
COUNTS_LOCK = threading.Lock()


def count(name):
    with COUNTS_LOCK:
        COUNTS[name] = COUNTS.get(name, 0) + 1


def b64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sts_error(start_response, code, message, status="400 Bad Request"):
    body = (
        '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
        f"<Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
        "<RequestId>image-reflector-test</RequestId></ErrorResponse>"
    ).encode()
    start_response(status, [("Content-Type", "text/xml"), ("Content-Length", str(len(body)))])
    return [body]


def check_web_identity(token, role_arn):
    """None when STS would accept the token for the role, else (code, message)."""
    issuer = os.environ.get("MOTO_TEST_OIDC_ISSUER")
    if not issuer:
        return None
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    try:
        header_b64, claims_b64, signature_b64 = token.split(".")
        header = json.loads(b64url(header_b64))
        claims = json.loads(b64url(claims_b64))
        signature = b64url(signature_b64)
    except Exception:
        return ("InvalidIdentityToken", "The web identity token is not a JWT")
    if header.get("alg") != "RS256":
        return ("InvalidIdentityToken", "The web identity token is not signed with RS256")
    with open(os.environ["MOTO_TEST_OIDC_KEY"], "rb") as f:
        key = serialization.load_pem_public_key(f.read())
    try:
        key.verify(
            signature,
            f"{header_b64}.{claims_b64}".encode(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    except Exception:
        return ("InvalidIdentityToken", "The web identity token's signature is not valid")
    if claims.get("iss") != issuer:
        return ("InvalidIdentityToken", f"No OpenIDConnect provider found for issuer {claims.get('iss')}")
    audiences = claims.get("aud")
    if isinstance(audiences, str):
        audiences = [audiences]
    if "sts.amazonaws.com" not in (audiences or []):
        return ("InvalidIdentityToken", "Incorrect token audience")
    if claims.get("exp", 0) <= time.time():
        return ("ExpiredTokenException", "Token expired")
    trust = json.loads(os.environ.get("MOTO_TEST_OIDC_TRUST", "{}"))
    if claims.get("sub") not in trust.get(role_arn, []):
        return ("AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity")
    return None


def ecr_public_token(start_response):
    password = os.environ.get("MOTO_TEST_ECR_PUBLIC_PASSWORD", "public-auth-token")
    token = base64.b64encode(f"AWS:{password}".encode()).decode()
    body = json.dumps(
        {"authorizationData": {"authorizationToken": token, "expiresAt": time.time() + 12 * 3600}}
    ).encode()
    start_response(
        "200 OK",
        [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(body)))],
    )
    return [body]


class Harness:
    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") == "/_test/counts":
            with COUNTS_LOCK:
                body = json.dumps(COUNTS).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target == "SpencerFrontendService.GetAuthorizationToken":
            count("ecr-public:GetAuthorizationToken")
            return ecr_public_token(start_response)
        if target.endswith(".GetAuthorizationToken"):
            count("ecr:GetAuthorizationToken")
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        if form.get("Action") == ["AssumeRoleWithWebIdentity"]:
            count("sts:AssumeRoleWithWebIdentity")
            refusal = check_web_identity(
                form.get("WebIdentityToken", [""])[0], form.get("RoleArn", [""])[0]
            )
            if refusal:
                count("sts:AssumeRoleWithWebIdentity:refused")
                return sts_error(start_response, *refusal, status="403 Forbidden" if refusal[0] == "AccessDenied" else "400 Bad Request")
        return self.app(environ, start_response)


def main():
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server("127.0.0.1", 0, Harness(app), threaded=True)
    print(f"listening on 127.0.0.1:{server.server_port}", flush=True)

    def stop_on_eof():
        sys.stdin.read()
        os._exit(0)

    threading.Thread(target=stop_on_eof, daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
