// Send one message through an SMTP server with Nodemailer, as an application would.
//
//   node send.js < config.json
//
// config: {host, port, secure, user, pass, authMethod, ca, from, to, subject, text, html,
//          attachmentBase64, attachmentName}
// The message is built with Nodemailer's MailComposer first, so that the caller learns the
// exact bytes that were sent. Prints one JSON object: {response, messageId, raw (base64)}.
// Exits 1 with {error, code, responseCode} when the server refuses.
"use strict";

const fs = require("node:fs");
const nodemailer = require("nodemailer");
const MailComposer = require("nodemailer/lib/mail-composer");

async function main() {
  const config = JSON.parse(fs.readFileSync(0, "utf8"));
  const mail = {
    from: config.from,
    to: config.to,
    subject: config.subject,
    text: config.text,
    html: config.html,
    attachments: config.attachmentBase64
      ? [{ filename: config.attachmentName, content: Buffer.from(config.attachmentBase64, "base64") }]
      : [],
  };
  const raw = await new MailComposer(mail).compile().build();
  const transport = nodemailer.createTransport({
    host: config.host,
    port: config.port,
    secure: Boolean(config.secure), // true: implicit TLS; false: STARTTLS, required below
    requireTLS: !config.secure,
    auth: { user: config.user, pass: config.pass },
    authMethod: config.authMethod || "PLAIN",
    tls: { ca: fs.readFileSync(config.ca), servername: "localhost" },
    name: "nodemailer.test",
    connectionTimeout: 10000,
    greetingTimeout: 10000,
    socketTimeout: 20000,
  });
  try {
    const info = await transport.sendMail({
      envelope: { from: config.from, to: [config.to] },
      raw,
    });
    process.stdout.write(
      JSON.stringify({ response: info.response, messageId: info.messageId, raw: raw.toString("base64") }) + "\n",
    );
  } catch (error) {
    process.stdout.write(
      JSON.stringify({ error: String(error.message), code: error.code, responseCode: error.responseCode }) + "\n",
    );
    process.exitCode = 1;
  } finally {
    transport.close();
  }
}

main().catch((error) => {
  process.stderr.write(String(error && error.stack ? error.stack : error) + "\n");
  process.exitCode = 2;
});
