// Alert views of @meshhook/metrics-dashboard (re-exported by src/lib/index.js).
export { default as AlertsPanel } from './AlertsPanel.svelte';
export { default as RuleEditor } from './RuleEditor.svelte';
export { default as SilenceForm } from './SilenceForm.svelte';
export { default as ReceiversView } from './ReceiversView.svelte';
export { default as RulePreview } from './RulePreview.svelte';
export { alertMarkers } from './markers.js';
export { STATES, ACTIVE_STATES, stateInfo, sortAlerts } from './states.js';
