/** Receiver kinds (docs/alerting.md, "Receivers and their payloads"): what their target and secret are. */

/** @type {Record<string, {label: string, target: string, placeholder: string, secret: string|null, targetOptional?: boolean}>} */
export const KINDS = {
  webhook: { label: 'Webhook', target: 'URL (http or https)', placeholder: 'https://ops.example.com/alerts',
    secret: 'Signing secret or bearer token (optional)' },
  slack: { label: 'Slack', target: 'Incoming-webhook URL (https)', placeholder: 'https://hooks.slack.com/services/…',
    secret: null },
  alertmanager: { label: 'Alertmanager', target: 'Base URL', placeholder: 'https://alertmanager.example.com',
    secret: 'Bearer token (optional)' },
  email: { label: 'E-mail', target: 'Address', placeholder: 'oncall@example.com', secret: null },
  pagerduty: { label: 'PagerDuty', target: 'Events API v2 URL (optional)',
    placeholder: 'https://events.pagerduty.com/v2/enqueue', secret: 'Routing key (required)', targetOptional: true }
};

/** @param {string} kind */
export const kindInfo = (kind) => KINDS[kind] ?? { label: kind, target: 'Target', placeholder: '', secret: 'Secret' };

/** Targets the API masks (`scheme://host/…`): a credential, shown but never sent back unchanged. */
export const isMasked = (/** @type {string} */ target) => typeof target === 'string' && target.endsWith('/…');
