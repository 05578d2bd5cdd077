"""The inbound listener: bounces (RFC 3464 DSNs) and complaints (RFC 5965 ARF reports) sent
back to the VERP return paths of the mail Posthorn delivered.

``server.py`` runs aiosmtpd on ``SMTP_HOST:INBOUND_PORT``; ``handler.py`` accepts only
recipients whose VERP token verifies and reads each message with the pure
:mod:`posthorn.domain.bounces`; ``recorder.py`` applies what a report says to the delivery it
names, in one transaction.
"""
