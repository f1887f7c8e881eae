/**
 * The monitoring section of the MLOps panel: the champion's latest verdict, the drift history
 * as a small inline SVG chart (drifted-feature share per check, coloured by verdict), and a
 * "Retrain now" button that asks for a data snapshot and starts a retrain job. A new drift or
 * decay verdict and the end of a retrain job are announced with JupyterLab's notifications.
 *
 * The panel owns it: `setModel` when the model changes, `update(jobs)` at each poll tick.
 */
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import type { TranslationBundle } from '@jupyterlab/translation';
import { Widget } from '@lumino/widgets';

import * as api from './api';
import { clear, h } from './dom';
import { describeError } from './errors';
import { IJob, isActive, statusClass, statusWord } from './models';
import {
  chartGeometry,
  IMonitorCheck,
  IMonitorView,
  isSnapshotRef,
  newAlarms,
  verdictWord
} from './monitorModels';

/** The monitoring history is read again at most this often (ms) while the panel polls. */
export const MONITOR_MS = 15000;

/** What the section calls out to (the REST API and the notifications), replaceable in tests. */
export interface IMonitorDeps {
  getMonitor: (model: string) => Promise<IMonitorView>;
  retrain: (model: string, data: string, promote: boolean) => Promise<IJob>;
  notify: (kind: 'warning' | 'success' | 'error', message: string) => void;
  now: () => number;
}

const DEFAULT_DEPS: IMonitorDeps = {
  getMonitor: api.getMonitor,
  retrain: api.retrain,
  notify: (kind, message) => {
    Notification[kind](message, {
      autoClose: kind === 'success' ? 5000 : false
    });
  },
  now: () => Date.now()
};

/** The value the Retrain dialog returns. */
export interface IRetrainValue {
  data: string;
  promote: boolean;
}

/** The Retrain dialog's body: the snapshot to train on, and whether to promote. */
export class RetrainForm
  extends Widget
  implements Dialog.IBodyWidget<IRetrainValue>
{
  readonly dataInput: HTMLInputElement;
  readonly promoteInput: HTMLInputElement;

  constructor(model: string, suggested: string, trans: TranslationBundle) {
    super();
    this.addClass('nbm-form');
    this.dataInput = h('input', {
      type: 'text',
      class: 'jp-mod-styled nbm-retrain-data',
      placeholder: trans.__('NAME@vN'),
      'aria-label': trans.__('data snapshot')
    }) as HTMLInputElement;
    this.dataInput.value = suggested;
    this.promoteInput = h('input', {
      type: 'checkbox',
      class: 'nbm-retrain-promote',
      'aria-label': trans.__('promote through the gates')
    }) as HTMLInputElement;
    this.promoteInput.checked = true;
    this.node.appendChild(
      h(
        'p',
        {},
        trans.__(
          "Run the champion's stored pipeline of %1 again, on a data snapshot.",
          model
        )
      )
    );
    this.node.appendChild(this.dataInput);
    this.node.appendChild(
      h(
        'label',
        {},
        this.promoteInput,
        ' ',
        trans.__('promote it if the gates pass')
      )
    );
  }

  getValue(): IRetrainValue {
    return {
      data: this.dataInput.value.trim(),
      promote: this.promoteInput.checked
    };
  }
}

export class MonitorSection {
  readonly node = h('div', { class: 'nbm-monitor' });
  private model = '';
  private view: IMonitorView | null = null;
  private error = '';
  private loadedAt = -Infinity;
  /** Retrain jobs this section started and still waits for: id → data. */
  private readonly pending = new Map<string, string>();
  private readonly deps: IMonitorDeps;

  constructor(
    private readonly trans: TranslationBundle,
    private readonly onJob: (job: IJob) => void,
    deps: Partial<IMonitorDeps> = {}
  ) {
    this.deps = { ...DEFAULT_DEPS, ...deps };
    this.render();
  }

  /** Show `model`'s monitoring (a new model: its history is read now). */
  async setModel(model: string): Promise<void> {
    if (model === this.model) {
      return;
    }
    this.model = model;
    this.view = null;
    await this.load();
  }

  /** One poll tick: announce finished retrain jobs; re-read the history now and then. */
  async update(jobs: ReadonlyArray<IJob>): Promise<void> {
    let finished = false;
    for (const job of jobs) {
      if (this.pending.has(job.id) && !isActive(job.status)) {
        this.pending.delete(job.id);
        this.announceJob(job);
        finished = true;
      }
    }
    if (finished || this.deps.now() - this.loadedAt >= MONITOR_MS) {
      await this.load();
    }
  }

  /** Read the history; announce verdicts that appeared since the last read. */
  async load(): Promise<void> {
    const model = this.model;
    if (!model) {
      this.render();
      return;
    }
    this.loadedAt = this.deps.now();
    try {
      const view = await this.deps.getMonitor(model);
      if (model !== this.model) {
        return; // the model changed while we waited
      }
      for (const check of newAlarms(this.view, view)) {
        this.deps.notify('warning', this.alarmText(check));
      }
      this.view = view;
      this.error = '';
    } catch (error) {
      this.error = describeError(error, this.trans);
    }
    this.render();
  }

  private alarmText(check: IMonitorCheck): string {
    return this.trans.__(
      '%1: check on %2 says %3 (%4 of the features drifted)',
      this.model,
      check.data ?? '?',
      verdictWord(check.verdict, this.trans),
      `${Math.round(check.share * 100)}%`
    );
  }

  private announceJob(job: IJob): void {
    const trans = this.trans;
    const ok = job.status === 'SUCCEEDED' || job.status === 'PROMOTED';
    const message = ok
      ? trans.__(
          'Retrain of %1 on %2 ended %3 (run %4)',
          job.model ?? this.model,
          job.data ?? '?',
          statusWord(job.status, trans),
          job.run_id ?? '—'
        )
      : trans.__(
          'Retrain of %1 on %2 ended %3: %4',
          job.model ?? this.model,
          job.data ?? '?',
          statusWord(job.status, trans),
          job.error ?? ''
        );
    this.deps.notify(ok ? 'success' : 'error', message);
  }

  /** Ask for the snapshot, post the retrain, hand the job to the panel. */
  async retrainNow(
    ask: (form: RetrainForm) => Promise<IRetrainValue | null> = askRetrain(
      this.trans
    )
  ): Promise<IJob | null> {
    const model = this.model;
    const latest = this.view?.checks[this.view.checks.length - 1];
    const value = await ask(
      new RetrainForm(model, latest?.data ?? '', this.trans)
    );
    if (value === null) {
      return null;
    }
    if (!isSnapshotRef(value.data)) {
      this.error = this.trans.__(
        'Name a data snapshot version as NAME@vN, got "%1"',
        value.data
      );
      this.render();
      return null;
    }
    try {
      const job = await this.deps.retrain(model, value.data, value.promote);
      this.pending.set(job.id, value.data);
      this.error = '';
      this.onJob(job);
      this.render();
      return job;
    } catch (error) {
      this.error = describeError(error, this.trans);
      this.render();
      return null;
    }
  }

  private render(): void {
    const trans = this.trans;
    clear(this.node);
    this.node.appendChild(h('h3', {}, trans.__('Monitoring')));
    if (this.error) {
      this.node.appendChild(h('div', { class: 'nbm-error' }, this.error));
    }
    if (!this.model) {
      return;
    }
    const view = this.view;
    if (view) {
      this.node.appendChild(this.renderLatest(view));
      if (view.checks.length > 0) {
        this.node.appendChild(driftChart(view.checks, trans));
      }
    }
    const button = h(
      'button',
      { class: 'jp-Button jp-mod-styled nbm-retrain', type: 'button' },
      trans.__('Retrain now')
    );
    button.addEventListener('click', () => void this.retrainNow());
    this.node.appendChild(button);
  }

  private renderLatest(view: IMonitorView): HTMLElement {
    const trans = this.trans;
    const latest = view.latest;
    if (!latest) {
      return h(
        'p',
        { class: 'nbm-muted nbm-latest' },
        view.champion
          ? trans.__('No check of the champion yet (nb-mlops monitor).')
          : trans.__('No champion.')
      );
    }
    return h(
      'p',
      { class: 'nbm-latest', 'data-verdict': latest.verdict },
      trans.__('latest verdict:'),
      ' ',
      h(
        'span',
        { class: `nbm-status nbm-status-${statusClass(latest.verdict)}` },
        verdictWord(latest.verdict, trans)
      ),
      ' ',
      trans.__(
        'version %1 on %2, %3 drifted',
        latest.version ?? '?',
        latest.data ?? '?',
        `${Math.round(latest.share * 100)}%`
      )
    );
  }
}

function askRetrain(
  trans: TranslationBundle
): (form: RetrainForm) => Promise<IRetrainValue | null> {
  return async form => {
    const result = await showDialog({
      title: trans.__('Retrain now'),
      body: form,
      buttons: [
        Dialog.cancelButton({ label: trans.__('Cancel') }),
        Dialog.okButton({ label: trans.__('Retrain') })
      ]
    });
    return result.button.accept ? result.value : null;
  };
}

const SVG = 'http://www.w3.org/2000/svg';

function svg(tag: string, attrs: { [name: string]: string | number }): Element {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) {
    node.setAttribute(name, String(value));
  }
  return node;
}

/** The drifted share per check as a line, one dot per check coloured by its verdict. */
export function driftChart(
  checks: ReadonlyArray<IMonitorCheck>,
  trans: TranslationBundle
): HTMLElement {
  const geometry = chartGeometry(checks);
  const chart = svg('svg', {
    class: 'nbm-drift-chart',
    width: geometry.width,
    height: geometry.height,
    viewBox: `0 0 ${geometry.width} ${geometry.height}`,
    role: 'img',
    'aria-label': trans.__('drifted share of the features per check')
  });
  chart.appendChild(svg('path', { d: geometry.path, class: 'nbm-drift-line' }));
  for (const point of geometry.points) {
    const dot = svg('circle', {
      cx: point.x,
      cy: point.y,
      r: 3,
      class: `nbm-drift-point nbm-verdict-${statusClass(point.check.verdict)}`,
      'data-verdict': point.check.verdict,
      'data-check': point.check.id
    });
    const title = svg('title', {});
    title.textContent = [
      point.check.at,
      verdictWord(point.check.verdict, trans),
      trans.__('%1 drifted', `${Math.round(point.check.share * 100)}%`),
      point.check.data ?? '?'
    ].join(' · ');
    dot.appendChild(title);
    chart.appendChild(dot);
  }
  return h(
    'figure',
    { class: 'nbm-drift' },
    chart,
    h(
      'figcaption',
      { class: 'nbm-muted' },
      trans.__('drifted share per check, oldest first')
    )
  );
}
