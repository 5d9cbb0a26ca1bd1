export {
  openMailboxStore,
  normaliseAddress,
  MailboxError,
  MAILBOX_TYPES,
  MIN_PASSWORD_LENGTH,
  type Mailbox,
  type MailboxErrorCode,
  type MailboxStore,
  type MailboxType,
} from './mailbox-store.ts';
