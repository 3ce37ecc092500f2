# SPDX-License-Identifier: MIT
"""testssl.sh against a replica's [tls] port (an ECDSA and an RSA
certificate, as an operator would serve): only TLS 1.2 and 1.3 offered, no
cipher testssl calls weak, and no finding of severity MEDIUM or worse (the
vulnerabilities: Heartbleed, ROBOT, CRIME, BREACH aside, POODLE, SWEET32,
FREAK, DROWN, LOGJAM, BEAST, LUCKY13, RC4, renegotiation, ...)."""

from __future__ import annotations

import json
import os
import subprocess

from cdnlib import Pki, free_port

# Findings that say nothing about the server's TLS: a test CA's certificate
# is not trusted by testssl's stores, and is short-lived; no OCSP/CT/CAA is
# set up for localhost.
NOT_ABOUT_TLS = ("cert_chain_of_trust", "cert_trust", "cert_validityPeriod", "cert_expirationStatus",
                 "cert_crlDistributionPoints", "cert_ocspURL", "OCSP_stapling", "cert_mustStapleExtension",
                 "DNS_CAArecord", "cert_certificatePolicies_EV", "certificate_transparency",
                 "cert_notAfter", "cert_extlifeSpan", "BREACH", "HSTS", "security_headers",
                 "banner_application", "cookie_count", "cert_commonName_wo_SNI",
                 "cert_subjectAltName", "cert_caIssuers", "cert_revocation", "scanProblem")


def test_testssl_finds_nothing_weak(cdn):
    pki = Pki(cdn.tempdir("cdn-pki-"))
    ec_cert, ec_key = pki.leaf("ecdsa", cn="localhost")
    rsa_cert, rsa_key = pki.leaf("rsa", cn="localhost", key="rsa")
    port = free_port()
    cdn.replica(extra={"tls": {"port": port, "certificate": [ec_cert, rsa_cert],
                               "key": [ec_key, rsa_key]}})
    out = cdn.tempdir("cdn-testssl-") / "testssl.json"
    run = subprocess.run(
        [os.environ.get("CDN_TESTSSL", "testssl"), "--quiet", "--color", "0", "--warnings", "off",
         "--connect-timeout", "10", "--openssl-timeout", "10", "--sneaky",
         "--protocols", "--std", "--server-defaults", "--vulnerable",
         "--jsonfile", str(out), f"localhost:{port}"],
        capture_output=True, timeout=1100)
    findings = json.loads(out.read_text())
    print(run.stdout.decode(errors="replace")[-4000:])
    by_id = {f["id"]: f for f in findings}
    for weak in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
        assert by_id[weak]["finding"].startswith("not offered"), by_id[weak]
    for good in ("TLS1_2", "TLS1_3"):
        assert by_id[good]["finding"].startswith("offered"), by_id[good]
    bad = [f for f in findings
           if f["severity"] in ("MEDIUM", "HIGH", "CRITICAL")
           and not f["id"].startswith(NOT_ABOUT_TLS)]
    assert not bad, "\n".join(f"{f['id']}: {f['severity']}: {f['finding']}" for f in bad)
