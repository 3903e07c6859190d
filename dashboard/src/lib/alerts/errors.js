/**
 * How the alert forms show an error: 422 details next to their field (`fieldErrors` of data/api.js), and
 * everything else — other statuses, or a 422 at a field the form does not show — in one banner.
 */
import { ApiError, fieldErrors } from '../data/api.js';

/** @typedef {{fields: Record<string, string>, banner: string}} FormErrors */

/** @type {FormErrors} */
export const NO_ERRORS = Object.freeze({ fields: {}, banner: '' });

/**
 * @param {unknown} error
 * @param {(key: string) => boolean} shown   whether the form shows this field path (e.g. `matchers.1.value`)
 * @returns {FormErrors}
 */
export function formErrors(error, shown) {
  if (!error) return NO_ERRORS;
  const all = fieldErrors(error);
  /** @type {Record<string, string>} */
  const fields = {};
  const rest = [];
  for (const [key, message] of Object.entries(all)) {
    if (shown(key)) fields[key] = message;
    else rest.push(key === '_' || key === '' ? message : `${key}: ${message}`);
  }
  if (error instanceof ApiError && error.status !== 422) return { fields, banner: describe(error) };
  if (!(error instanceof ApiError)) return { fields, banner: String(/** @type {any} */ (error)?.message ?? error) };
  return { fields, banner: rest.join('; ') || (Object.keys(fields).length ? '' : error.message) };
}

/** @param {ApiError} error */
export function describe(error) {
  switch (error.status) {
    case 0: return `The metrics service did not answer: ${error.message}`;
    case 401: return 'Your session has expired: sign in again.';
    case 403: return `Not allowed: ${error.message}`;
    case 404: return `Not found: ${error.message}`;
    case 409: return `Already exists: ${error.message}`;
    default: return error.message || `Request failed (${error.status})`;
  }
}

let counter = 0;
/** A unique element id per component instance (no `$props.id()` on Svelte 5.2). @param {string} prefix */
export function uid(prefix) {
  counter += 1;
  return `${prefix}-${counter}`;
}
