import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';

/**
 * smtp-server derives the enhanced status code (RFC 3463) of a handler's error from the numeric
 * code alone (any 550 becomes 5.1.1, any 451 4.3.0). Our catalogue (gateway/errors.ts) puts the
 * right enhanced code at the head of the message, e.g. `5.7.1 Relay access denied`; this makes
 * smtp-server send that code instead of adding its own. Replies without one are left alone.
 * test/ingress.test.ts checks the wire format, so a change in smtp-server is caught.
 */
const ENHANCED_AT_HEAD = /^[245]\.\d{1,3}\.\d{1,3} /;
let installed = false;

export function installEnhancedCodeReplies(): void {
  if (installed) return;
  installed = true;
  const proto = SMTPConnection.prototype as unknown as {
    send(code: number, data?: unknown, context?: unknown): void;
  };
  const original = proto.send;
  proto.send = function send(this: unknown, code: number, data?: unknown, context?: unknown): void {
    if (context === undefined && typeof data === 'string' && ENHANCED_AT_HEAD.test(data)) {
      // context false = "no enhanced code of your own"; ours is already in the text.
      return original.call(this, code, data, false);
    }
    return original.call(this, code, data, context);
  };
}
