import { render, screen, within } from '@testing-library/svelte';
import { describe, expect, it } from 'vitest';
import DataTable from './DataTable.svelte';

const frame = {
  times: [1_800_000_000, 1_800_000_060, 1_800_000_120],
  step: 60,
  series: [
    { key: 'ok', label: 'outcome=ok', labels: { outcome: 'ok' }, values: [1024, null, 2048] },
    { key: 'err', label: 'outcome=error', labels: { outcome: 'error' }, values: [0, 1, 2] }
  ],
  partialFrom: 1_800_000_120,
  kind: 'counter'
};

describe('DataTable', () => {
  it('has a time column plus one column per series, formatted in the unit', () => {
    render(DataTable, { props: { frame, unit: 'bytes', caption: 'Disk' } });
    const table = screen.getByRole('table', { name: 'Disk' });
    const headers = within(table).getAllByRole('columnheader').map((h) => h.textContent);
    expect(headers).toEqual(['Time', 'outcome=ok', 'outcome=error']);
    const rows = within(table).getAllByRole('row').slice(1);
    expect(rows).toHaveLength(3);
    // newest first; the open step says so
    expect(rows[0].textContent).toContain('(in progress)');
    expect(within(rows[0]).getAllByRole('cell').map((c) => c.textContent)).toEqual(['2 KiB', '2 B']);
    expect(within(rows[1]).getAllByRole('cell').map((c) => c.textContent)).toEqual(['–', '1 B']);
    expect(rows[1].textContent).not.toContain('in progress');
  });

  it('says when there is nothing to show', () => {
    render(DataTable, { props: { frame: null } });
    expect(screen.getByRole('table').textContent).toContain('No data in this range');
  });
});
