"""The SMTP submission server, on aiosmtpd: one more door into the intake.

- ``server``: ``run_smtp()``, the STARTTLS and implicit-TLS listeners, the graceful stop;
- ``protocol``: one session, aiosmtpd's protocol with AUTH, DATA and the replies changed;
- ``construction``: a session set up without aiosmtpd's per-connection introspection;
- ``handler``: what is accepted at EHLO, MAIL, RCPT and DATA, then ``intake.submit_raw``;
- ``auth``: credentials (a sender's password or an API key) turned into a ``Credential``
  (failed attempts are counted for the whole deployment by
  ``posthorn.services.login_throttle``);
- ``guard``: the connection rules, for the inbound listener too: a cap per client network,
  no commands before the greeting, time to authenticate;
- ``data`` (pure): the DATA stream turned into one message or a refusal;
- ``received`` (pure): the Received trace field;
- ``replies`` (pure): reply texts, enhanced status codes, errors mapped to replies;
- ``tls``: the configured certificate, or a generated self-signed one;
- ``workers``: with ``POSTHORN_SMTP_WORKERS`` > 1, session processes around one intake,
  joined by ``intake_link`` (each message handed over a socket pair, the answer back).
"""
