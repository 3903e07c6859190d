// Public API of @meshhook/metrics-dashboard. The theme is a separate export: import '@meshhook/metrics-dashboard/theme.css'.

// components
export { default as MetricsDashboard } from './components/MetricsDashboard.svelte';
export { default as Panel } from './components/Panel.svelte';
export { default as TimeSeriesPanel } from './components/TimeSeriesPanel.svelte';
export { default as StatTile } from './components/StatTile.svelte';
export { default as DataTable } from './components/DataTable.svelte';
export { default as ConnectionBadge } from './components/ConnectionBadge.svelte';
export { default as TimeRangePicker } from './components/TimeRangePicker.svelte';
export { default as PanelEditor } from './components/PanelEditor.svelte';

// data
export { createMetricsApi, ApiError, fieldErrors, sessionAuth, sessionToken, refreshedToken } from './data/api.js';
export { getLiveConnection } from './data/live.svelte.js';
export { PanelData } from './data/panel-data.svelte.js';
export { setDashboardContext, getDashboardContext } from './context.js';
export {
  DEFAULT_DASHBOARD,
  PANEL_TYPES,
  THRESHOLD_COLORS,
  validateSpec,
  validatePanel,
  newPanel,
  addPanel,
  movePanel,
  removePanel,
  replacePanel
} from './data/spec.js';
export {
  PRESETS,
  rangeToParams,
  rangeFromParams,
  resolveRange,
  defaultStep,
  sameRange,
  customRangeError
} from './data/range.js';

// formatting
export { UNITS, formatValue, formatDuration, formatTime, formatDateTime } from './format/units.js';

// alerts: AlertsPanel, RuleEditor, SilenceForm, ReceiversView, alertMarkers, ...
export * from './alerts/index.js';
