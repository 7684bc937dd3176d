// A table whose columns sort by a click (or Enter) on their header and keep their order
// across refreshes; rows are keyed so that tests and links can find them.

import { h } from './dom.js';

/**
 * `columns`: `{ id, label, value(row), cell(row)?, numeric? }`; `value` sorts (and is the
 * cell's text unless `cell` draws it). `key(row)` names a row.
 */
export class SortableTable {
  constructor({ columns, key, caption, sortBy, empty }) {
    this.columns = columns;
    this.key = key;
    this.empty = empty ?? 'Nothing yet.';
    this.sort = { id: sortBy ?? columns[0].id, descending: false };
    this.rows = [];
    this.head = h('tr');
    this.body = h('tbody');
    this.element = h(
      'div',
      { class: 'table-scroll' },
      h('table', {}, caption ? h('caption', {}, caption) : null, h('thead', {}, this.head), this.body),
    );
    this.drawHead();
    this.body.replaceChildren(h('tr', {}, h('td', { colspan: columns.length, class: 'empty' }, 'Loading…')));
  }

  drawHead() {
    this.head.replaceChildren(
      ...this.columns.map((c) => {
        const sorted = this.sort.id === c.id;
        const order = sorted ? (this.sort.descending ? 'descending' : 'ascending') : 'none';
        return h(
          'th',
          { scope: 'col', 'aria-sort': order, class: c.numeric ? 'num' : null },
          h(
            'button',
            { type: 'button', class: 'sort', 'data-col': c.id, onclick: () => this.sortBy(c) },
            c.label,
            h('span', { class: 'arrow', 'aria-hidden': 'true' }, sorted ? (this.sort.descending ? ' ▼' : ' ▲') : ''),
          ),
        );
      }),
    );
  }

  sortBy(column) {
    if (this.sort.id === column.id) this.sort.descending = !this.sort.descending;
    else this.sort = { id: column.id, descending: Boolean(column.numeric) };
    this.drawHead();
    this.draw();
  }

  /** Shows `rows`, in the current order. */
  update(rows) {
    this.rows = rows;
    this.draw();
  }

  draw() {
    const column = this.columns.find((c) => c.id === this.sort.id);
    const sign = this.sort.descending ? -1 : 1;
    const sorted = [...this.rows].sort((a, b) => compare(column.value(a), column.value(b), sign));
    if (sorted.length === 0) {
      this.body.replaceChildren(h('tr', {}, h('td', { colspan: this.columns.length, class: 'empty' }, this.empty)));
      return;
    }
    this.body.replaceChildren(
      ...sorted.map((row) =>
        h(
          'tr',
          { 'data-key': this.key(row) },
          ...this.columns.map((c) =>
            h('td', { 'data-col': c.id, class: c.numeric ? 'num' : null }, c.cell ? c.cell(row) : c.value(row)),
          ),
        ),
      ),
    );
  }
}

// Values without data (null) sort after every number, in either order.
function compare(a, b, sign) {
  const none = (v) => v === null || v === undefined;
  if (none(a) || none(b)) return none(a) - none(b);
  if (typeof a === 'number' && typeof b === 'number') return sign * (a - b);
  return sign * String(a).localeCompare(String(b), undefined, { numeric: true });
}
