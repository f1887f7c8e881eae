/**
 * The MLOps panel (right sidebar): jobs with live step progress, the final gate table, result
 * links, and the model's promotion history with a Rollback button. A `Poll` refreshes the jobs
 * every second while one is active and every five seconds otherwise, backs off while the
 * server does not answer, stands by while the page is hidden and stops while the panel is.
 */
import { Dialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import type { TranslationBundle } from '@jupyterlab/translation';
import { Poll } from '@lumino/polling';
import { Widget } from '@lumino/widgets';

import * as api from './api';
import { ApprovalsView } from './approvals';
import { asText, clear, h, link } from './dom';
import { describeError } from './errors';
import {
  actionWord,
  anyActive,
  championVersion,
  gateVerdict,
  IGateResult,
  IHistory,
  IJob,
  isActive,
  justFinished,
  needsDetail,
  recentEntries,
  resultLinks,
  statusClass,
  statusWord
} from './models';
import { MonitorSection } from './monitor';

/** Poll intervals (ms): a job is active, nothing is active, the longest backoff. */
export const FAST_MS = 1000;
export const SLOW_MS = 5000;
export const MAX_MS = 60000;
const MAX_JOBS = 20;

class ReasonForm extends Widget implements Dialog.IBodyWidget<string> {
  private readonly input: HTMLTextAreaElement;
  constructor(model: string, trans: TranslationBundle) {
    super();
    this.addClass('nbm-form');
    this.input = h('textarea', {
      class: 'jp-mod-styled nbm-reason',
      rows: '3',
      'aria-label': trans.__('reason'),
      placeholder: trans.__(
        'why roll back? (recorded in the promotion journal)'
      )
    }) as HTMLTextAreaElement;
    this.node.appendChild(
      h(
        'p',
        {},
        trans.__(
          'Move the champion alias of %1 back to the previous champion.',
          model
        )
      )
    );
    this.node.appendChild(this.input);
  }
  getValue(): string {
    return this.input.value;
  }
}

export class MlopsPanel extends Widget {
  private jobs: IJob[] = [];
  private history: IHistory | null = null;
  private historyError = '';
  private model = '';
  private uiUrl = '';
  private readonly poll: Poll;
  private readonly jobsNode = h('div', { class: 'nbm-jobs' });
  private readonly historyNode = h('div', { class: 'nbm-history' });
  private readonly modelInput: HTMLInputElement;
  private readonly errorNode = h('div', { class: 'nbm-error' });
  /** The model's latest verdict, drift history and Retrain button. */
  readonly monitor: MonitorSection;
  private readonly approvals: ApprovalsView;

  constructor(private readonly trans: TranslationBundle) {
    super();
    this.id = 'nb-mlops-panel';
    this.addClass('nbm-panel');
    this.title.caption = trans.__('MLOps: jobs and model history');
    this.poll = new Poll({
      auto: false,
      factory: () => this.refresh(),
      frequency: { interval: SLOW_MS, backoff: true, max: MAX_MS },
      name: 'nb_mlops:jobs',
      standby: 'when-hidden'
    });
    this.modelInput = h('input', {
      type: 'text',
      class: 'jp-mod-styled',
      placeholder: trans.__('model name'),
      'aria-label': trans.__('model name for history')
    }) as HTMLInputElement;
    this.modelInput.addEventListener('change', () =>
      this.setModel(this.modelInput.value.trim())
    );
    const refresh = h(
      'button',
      { class: 'jp-Button jp-mod-styled', type: 'button' },
      trans.__('Refresh')
    );
    this.approvals = new ApprovalsView(trans, () => void this.loadHistory());
    refresh.addEventListener('click', () => {
      void this.loadHistory();
      void this.approvals.load(this.model);
      void this.poll.refresh();
    });
    this.node.appendChild(h('h2', {}, trans.__('MLOps')));
    this.node.appendChild(this.errorNode);
    this.node.appendChild(h('h3', {}, trans.__('Jobs')));
    this.node.appendChild(this.jobsNode);
    this.node.appendChild(h('h3', {}, trans.__('Model history')));
    this.node.appendChild(
      h('div', { class: 'nbm-row' }, this.modelInput, refresh)
    );
    this.node.appendChild(this.historyNode);
    this.monitor = new MonitorSection(trans, job => this.track(job));
    this.node.appendChild(this.monitor.node);
    this.node.appendChild(this.approvals.node);
    this.renderJobs();
    this.renderHistory();
  }

  /** Show `model`'s history (set by the Promote dialog). */
  setModel(model: string, uiUrl?: string): void {
    if (uiUrl !== undefined) {
      this.uiUrl = uiUrl;
    }
    if (model && model !== this.model) {
      this.model = model;
      this.modelInput.value = model;
      this.history = null;
      void this.loadHistory();
      void this.monitor.setModel(model);
      void this.approvals.load(model);
    }
  }

  /** Add a just-started job at the top and poll fast. */
  track(job: IJob): void {
    this.jobs = [job, ...this.jobs.filter(j => j.id !== job.id)];
    this.renderJobs();
    this.pace();
    if (this.isVisible) {
      void this.poll.refresh();
    }
  }

  protected onAfterAttach(): void {
    // attached already visible (a restored sidebar) gets no after-show message
    if (this.isVisible) {
      this.startPolling();
    }
  }

  protected onAfterShow(): void {
    this.startPolling();
  }

  protected onBeforeHide(): void {
    void this.poll.stop();
  }

  protected onBeforeDetach(): void {
    void this.poll.stop();
  }

  /** A stopped poll starts with an immediate tick; a running one ticks now. */
  private startPolling(): void {
    const phase = this.poll.state.phase;
    void (phase === 'stopped' || phase === 'constructed'
      ? this.poll.start()
      : this.poll.refresh());
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this.poll.dispose();
    super.dispose();
  }

  /** Fast while a job is active, slow otherwise (read by the poll's next tick). */
  private pace(): void {
    this.poll.frequency = {
      ...this.poll.frequency,
      interval: anyActive(this.jobs) ? FAST_MS : SLOW_MS
    };
  }

  /** One poll tick: the job list, with details for active jobs; rejects so the poll backs off. */
  private async refresh(): Promise<void> {
    try {
      const { jobs } = await api.listJobs();
      // Active jobs get their full view (step progress, log tail) at every tick.
      const detail = needsDetail(jobs);
      const detailed = await Promise.all(
        jobs.map(j =>
          detail.has(j.id) ? api.getJob(j.id) : Promise.resolve(j)
        )
      );
      const finished = justFinished(this.jobs, detailed);
      this.jobs = detailed;
      this.errorNode.textContent = '';
      void this.monitor.update(detailed);
      if (finished.length > 0 && this.model) {
        await this.loadHistory();
      }
    } catch (error) {
      this.errorNode.textContent = describeError(error, this.trans);
      throw error;
    } finally {
      if (!this.isDisposed) {
        this.renderJobs();
        this.pace();
      }
    }
  }

  private async loadHistory(): Promise<void> {
    if (!this.model) {
      return;
    }
    try {
      this.history = await api.getHistory(this.model);
      this.historyError = '';
    } catch (error) {
      this.history = null;
      this.historyError = describeError(error, this.trans);
    }
    this.renderHistory();
  }

  private renderJobs(): void {
    clear(this.jobsNode);
    if (this.jobs.length === 0) {
      this.jobsNode.appendChild(
        h(
          'p',
          { class: 'nbm-muted' },
          this.trans.__('No jobs yet. Click Promote in a notebook toolbar.')
        )
      );
      return;
    }
    for (const job of this.jobs.slice(0, MAX_JOBS)) {
      this.jobsNode.appendChild(this.renderJob(job));
    }
  }

  private statusBadge(status: string): HTMLElement {
    return h(
      'span',
      { class: `nbm-status nbm-status-${statusClass(status)}` },
      statusWord(status, this.trans)
    );
  }

  private renderJob(job: IJob): HTMLElement {
    const trans = this.trans;
    const active = isActive(job.status);
    const card = h('div', {
      class: 'nbm-job',
      'data-job-id': job.id,
      'data-status': job.status
    });
    card.appendChild(
      h(
        'div',
        { class: 'nbm-row' },
        this.statusBadge(job.status),
        h(
          'span',
          { class: 'nbm-job-title' },
          `${actionWord(job.action, trans)} ${job.path || job.data || ''}`
        ),
        job.model ? h('span', { class: 'nbm-muted' }, `→ ${job.model}`) : null
      )
    );
    const steps = Object.entries(job.steps);
    if (steps.length > 0) {
      const list = h('ul', { class: 'nbm-steps' });
      for (const [name, step] of steps) {
        const status = String(step.status ?? 'PENDING');
        const duration =
          typeof step.duration === 'number'
            ? trans.__('%1 s', step.duration.toFixed(1))
            : null;
        list.appendChild(
          h(
            'li',
            { 'data-step': name, 'data-status': status },
            this.statusBadge(status),
            ' ',
            name,
            step.cached
              ? h('span', { class: 'nbm-muted' }, ' ', trans.__('(cached)'))
              : null,
            duration ? h('span', { class: 'nbm-muted' }, ' ', duration) : null,
            step.error
              ? h('div', { class: 'nbm-error' }, String(step.error))
              : null
          )
        );
      }
      card.appendChild(list);
    }
    if (job.gates.length > 0) {
      card.appendChild(this.renderGates(job.gates));
    }
    if (job.error && !active) {
      card.appendChild(h('div', { class: 'nbm-error' }, job.error));
    }
    card.appendChild(this.renderLinks(job, active));
    if (job.log_tail && job.log_tail.length > 0) {
      card.appendChild(
        h(
          'details',
          {},
          h('summary', {}, trans.__('log')),
          h('pre', { class: 'nbm-log' }, job.log_tail.join('\n'))
        )
      );
    }
    return card;
  }

  private renderLinks(job: IJob, active: boolean): HTMLElement {
    const trans = this.trans;
    const links = h('div', { class: 'nbm-row nbm-links' });
    if (job.model_version) {
      links.appendChild(
        h(
          'span',
          {},
          trans.__('%1 version %2', job.model ?? '', job.model_version)
        )
      );
    }
    if (this.uiUrl && job.links) {
      for (const { kind, url } of resultLinks(job, this.uiUrl)) {
        const text =
          kind === 'run' ? trans.__('MLflow run') : trans.__('model version');
        links.appendChild(link(text, url));
      }
    } else if (job.run_id) {
      links.appendChild(
        h('span', { class: 'nbm-muted' }, trans.__('run %1', job.run_id))
      );
    }
    if (active) {
      const cancel = h(
        'button',
        {
          class: 'jp-Button jp-mod-styled jp-mod-warn nbm-cancel',
          type: 'button'
        },
        trans.__('Cancel')
      );
      cancel.addEventListener('click', () => void this.cancel(job));
      links.appendChild(cancel);
    }
    return links;
  }

  private async cancel(job: IJob): Promise<void> {
    try {
      this.track(await api.cancelJob(job.id));
    } catch (error) {
      await showErrorMessage(
        this.trans.__('Cancel failed'),
        describeError(error, this.trans)
      );
    }
  }

  private renderGates(gates: IGateResult[]): HTMLElement {
    const trans = this.trans;
    const rows = gates.map(g => {
      const verdict = gateVerdict(g);
      return h(
        'tr',
        { 'data-verdict': verdict },
        h('td', {}, asText(g.gate ?? g.name)),
        h(
          'td',
          { class: `nbm-verdict nbm-verdict-${statusClass(verdict)}` },
          statusWord(verdict, trans)
        ),
        h('td', {}, asText(g.measured)),
        h('td', {}, asText(g.expected)),
        h('td', { class: 'nbm-muted' }, asText(g.detail ?? ''))
      );
    });
    return h(
      'table',
      { class: 'nbm-table nbm-gates' },
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          h('th', {}, trans.__('gate')),
          h('th', {}, trans.__('verdict')),
          h('th', {}, trans.__('measured')),
          h('th', {}, trans.__('expected')),
          h('th', {}, '')
        )
      ),
      h('tbody', {}, ...rows)
    );
  }

  private renderHistory(): void {
    const trans = this.trans;
    clear(this.historyNode);
    if (!this.model) {
      this.historyNode.appendChild(
        h(
          'p',
          { class: 'nbm-muted' },
          trans.__('Type a model name, or promote a notebook.')
        )
      );
      return;
    }
    if (this.historyError) {
      this.historyNode.appendChild(
        h('div', { class: 'nbm-error' }, this.historyError)
      );
    }
    const history = this.history;
    if (!history) {
      return;
    }
    const version = asText(championVersion(history.champion));
    this.historyNode.appendChild(
      h(
        'p',
        { class: 'nbm-champion' },
        trans.__('%1 champion:', this.model),
        ' ',
        h('b', { 'data-champion': version }, version)
      )
    );
    const rows = recentEntries(history).map(e =>
      h(
        'tr',
        {},
        h('td', { title: asText(e.when) }, shortTime(e.when)),
        h('td', {}, asText(e.action)),
        h('td', {}, `${asText(e.from_version)} → ${asText(e.to_version)}`),
        h('td', {}, asText(e.who)),
        h('td', {}, asText(e.reason ?? ''))
      )
    );
    this.historyNode.appendChild(
      h(
        'table',
        { class: 'nbm-table' },
        h(
          'thead',
          {},
          h(
            'tr',
            {},
            h('th', {}, trans.__('when')),
            h('th', {}, trans.__('action')),
            h('th', {}, trans.__('version')),
            h('th', {}, trans.__('who')),
            h('th', {}, trans.__('reason'))
          )
        ),
        h('tbody', {}, ...rows)
      )
    );
    const button = h(
      'button',
      {
        class: 'jp-Button jp-mod-styled jp-mod-warn nbm-rollback',
        type: 'button'
      },
      trans.__('Rollback')
    );
    button.addEventListener('click', () => void this.rollback());
    this.historyNode.appendChild(button);
  }

  private async rollback(): Promise<void> {
    const { model, trans } = this;
    for (;;) {
      const result = await showDialog({
        title: trans.__('Roll back %1?', model),
        body: new ReasonForm(model, trans),
        buttons: [
          Dialog.cancelButton({ label: trans.__('Cancel') }),
          Dialog.warnButton({ label: trans.__('Rollback') })
        ]
      });
      if (!result.button.accept) {
        return;
      }
      const reason = (result.value ?? '').trim();
      if (!reason) {
        await showErrorMessage(
          trans.__('A reason is required'),
          trans.__('The journal records why the champion moved back.')
        );
        continue;
      }
      try {
        await api.rollback(model, reason);
      } catch (error) {
        await showErrorMessage(
          trans.__('Rollback failed'),
          describeError(error, trans)
        );
      }
      await this.loadHistory();
      return;
    }
  }
}

/** "Nov 26, 2026, 06:05 PM" in the user's locale (the ISO time stays in the cell's tooltip). */
function shortTime(value: unknown): string {
  const when = new Date(asText(value));
  return Number.isNaN(when.getTime())
    ? asText(value)
    : when.toLocaleString(undefined, {
        year: 'numeric',
        month: 'short',
        day: 'numeric',
        hour: '2-digit',
        minute: '2-digit'
      });
}
