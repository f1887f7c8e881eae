/**
 * The MLOps panel (right sidebar): jobs with live step progress, the final gate table, result
 * links, and the model's promotion history with a Rollback button. Polls every second while a job
 * is active, every five seconds otherwise (only while the panel is visible).
 */
import { Dialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import * as api from './api';
import { asText, clear, h, link } from './dom';
import { ACTIVE_STATUSES, IHistory, IJob } from './models';

const FAST_MS = 1000;
const SLOW_MS = 5000;

class ReasonForm extends Widget implements Dialog.IBodyWidget<string> {
  private readonly input: HTMLTextAreaElement;
  constructor(model: string, target: string) {
    super();
    this.addClass('nbm-form');
    this.input = h('textarea', {
      class: 'jp-mod-styled nbm-reason',
      rows: '3',
      'aria-label': 'reason',
      placeholder: 'why roll back? (recorded in the promotion journal)'
    }) as HTMLTextAreaElement;
    this.node.appendChild(
      h('p', {}, `Move the champion alias of ${model} back to ${target}.`)
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
  private timer: number | undefined;
  private readonly jobsNode = h('div', { class: 'nbm-jobs' });
  private readonly historyNode = h('div', { class: 'nbm-history' });
  private readonly modelInput: HTMLInputElement;
  private readonly errorNode = h('div', { class: 'nbm-error' });

  constructor() {
    super();
    this.id = 'nb-mlops-panel';
    this.addClass('nbm-panel');
    this.title.caption = 'MLOps: jobs and model history';
    this.modelInput = h('input', {
      type: 'text',
      class: 'jp-mod-styled',
      placeholder: 'model name',
      'aria-label': 'model name for history'
    }) as HTMLInputElement;
    this.modelInput.addEventListener('change', () => this.setModel(this.modelInput.value.trim()));
    const refresh = h('button', { class: 'jp-Button jp-mod-styled', type: 'button' }, 'Refresh');
    refresh.addEventListener('click', () => void this.refresh());
    this.node.appendChild(h('h2', {}, 'MLOps'));
    this.node.appendChild(this.errorNode);
    this.node.appendChild(h('h3', {}, 'Jobs'));
    this.node.appendChild(this.jobsNode);
    this.node.appendChild(h('h3', {}, 'Model history'));
    this.node.appendChild(h('div', { class: 'nbm-row' }, this.modelInput, refresh));
    this.node.appendChild(this.historyNode);
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
    }
  }

  /** Add a just-started job at the top and poll fast. */
  track(job: IJob): void {
    this.jobs = [job, ...this.jobs.filter(j => j.id !== job.id)];
    this.renderJobs();
    this.schedule(FAST_MS);
  }

  protected onAfterShow(): void {
    void this.refresh();
  }

  protected onBeforeHide(): void {
    window.clearTimeout(this.timer);
    this.timer = undefined;
  }

  dispose(): void {
    window.clearTimeout(this.timer);
    super.dispose();
  }

  private schedule(ms: number): void {
    window.clearTimeout(this.timer);
    this.timer = window.setTimeout(() => void this.refresh(), ms);
  }

  async refresh(): Promise<void> {
    try {
      const { jobs } = await api.listJobs();
      // Active jobs get their full view (step progress, log tail) at every tick.
      const detailed = await Promise.all(
        jobs.map(j => (ACTIVE_STATUSES.includes(j.status) || j.id === jobs[0]?.id ? api.getJob(j.id) : j))
      );
      const finishedNow = this.jobs.some(
        old => ACTIVE_STATUSES.includes(old.status) &&
          detailed.some(j => j.id === old.id && !ACTIVE_STATUSES.includes(j.status))
      );
      this.jobs = detailed;
      this.errorNode.textContent = '';
      if (finishedNow && this.model) {
        await this.loadHistory();
      }
    } catch (error) {
      this.errorNode.textContent = String((error as Error).message ?? error);
    }
    this.renderJobs();
    if (!this.isDisposed && (this.isVisible || this.jobs.some(j => ACTIVE_STATUSES.includes(j.status)))) {
      this.schedule(this.jobs.some(j => ACTIVE_STATUSES.includes(j.status)) ? FAST_MS : SLOW_MS);
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
      this.historyError = String((error as Error).message ?? error);
    }
    this.renderHistory();
  }

  private renderJobs(): void {
    clear(this.jobsNode);
    if (this.jobs.length === 0) {
      this.jobsNode.appendChild(h('p', { class: 'nbm-muted' }, 'No jobs yet. Click Promote in a notebook toolbar.'));
      return;
    }
    for (const job of this.jobs.slice(0, 20)) {
      this.jobsNode.appendChild(this.renderJob(job));
    }
  }

  private renderJob(job: IJob): HTMLElement {
    const active = ACTIVE_STATUSES.includes(job.status);
    const card = h('div', { class: 'nbm-job', 'data-job-id': job.id, 'data-status': job.status });
    card.appendChild(
      h(
        'div',
        { class: 'nbm-row' },
        h('span', { class: `nbm-status nbm-status-${job.status.toLowerCase()}` }, job.status),
        h('span', { class: 'nbm-job-title' }, `${job.action} ${job.path}`),
        job.model ? h('span', { class: 'nbm-muted' }, `→ ${job.model}`) : null
      )
    );
    const steps = Object.entries(job.steps || {});
    if (steps.length > 0) {
      const list = h('ul', { class: 'nbm-steps' });
      for (const [name, step] of steps) {
        const status = String(step.status ?? 'PENDING');
        list.appendChild(
          h(
            'li',
            { 'data-step': name, 'data-status': status },
            h('span', { class: `nbm-status nbm-status-${status.toLowerCase()}` }, status),
            ' ',
            name,
            step.cached ? h('span', { class: 'nbm-muted' }, ' (cached)') : null,
            step.duration != null ? h('span', { class: 'nbm-muted' }, ` ${Number(step.duration).toFixed(1)} s`) : null,
            step.error ? h('div', { class: 'nbm-error' }, String(step.error)) : null
          )
        );
      }
      card.appendChild(list);
    }
    if (job.gates && job.gates.length > 0) {
      card.appendChild(this.renderGates(job));
    }
    if (job.error && !active) {
      card.appendChild(h('div', { class: 'nbm-error' }, job.error));
    }
    const links = h('div', { class: 'nbm-row nbm-links' });
    if (job.model_version) {
      links.appendChild(h('span', {}, `${job.model} version ${job.model_version}`));
    }
    if (this.uiUrl && job.links) {
      for (const [name, fragment] of Object.entries(job.links)) {
        if (typeof fragment === 'string' && fragment.startsWith('#/')) {
          links.appendChild(link(name === 'run' ? 'MLflow run' : 'model version', this.uiUrl.replace(/\/$/, '') + '/' + fragment));
        }
      }
    } else if (job.run_id) {
      links.appendChild(h('span', { class: 'nbm-muted' }, `run ${job.run_id}`));
    }
    if (active) {
      const cancel = h('button', { class: 'jp-Button jp-mod-styled jp-mod-warn nbm-cancel', type: 'button' }, 'Cancel');
      cancel.addEventListener('click', async () => {
        try {
          this.track(await api.cancelJob(job.id));
        } catch (error) {
          void showErrorMessage('Cancel failed', String((error as Error).message));
        }
      });
      links.appendChild(cancel);
    }
    card.appendChild(links);
    if (job.log_tail && job.log_tail.length > 0) {
      const details = h('details', {}, h('summary', {}, 'log'), h('pre', { class: 'nbm-log' }, job.log_tail.join('\n')));
      card.appendChild(details);
    }
    return card;
  }

  private renderGates(job: IJob): HTMLElement {
    const rows = job.gates.map(g => {
      const verdict = String(g.verdict ?? (g.passed === false ? 'FAIL' : 'PASS'));
      return h(
        'tr',
        { 'data-verdict': verdict },
        h('td', {}, asText(g.gate ?? g.name)),
        h('td', { class: `nbm-verdict nbm-verdict-${verdict.toLowerCase()}` }, verdict),
        h('td', {}, asText(g.measured)),
        h('td', {}, asText(g.expected)),
        h('td', { class: 'nbm-muted' }, asText(g.detail ?? ''))
      );
    });
    return h(
      'table',
      { class: 'nbm-table nbm-gates' },
      h('thead', {}, h('tr', {}, h('th', {}, 'gate'), h('th', {}, 'verdict'), h('th', {}, 'measured'), h('th', {}, 'expected'), h('th', {}, ''))),
      h('tbody', {}, ...rows)
    );
  }

  private renderHistory(): void {
    clear(this.historyNode);
    if (!this.model) {
      this.historyNode.appendChild(h('p', { class: 'nbm-muted' }, 'Type a model name, or promote a notebook.'));
      return;
    }
    if (this.historyError) {
      this.historyNode.appendChild(h('div', { class: 'nbm-error' }, this.historyError));
    }
    const history = this.history;
    if (!history) {
      return;
    }
    const champion = history.champion;
    this.historyNode.appendChild(
      h('p', { class: 'nbm-champion' }, `${this.model} champion: `,
        h('b', { 'data-champion': asText(championVersion(champion)) }, asText(championVersion(champion))))
    );
    const entries = Array.isArray(history.entries) ? history.entries : [];
    const rows = entries.slice().reverse().slice(0, 30).map(e =>
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
        h('thead', {}, h('tr', {}, h('th', {}, 'when'), h('th', {}, 'action'), h('th', {}, 'version'), h('th', {}, 'who'), h('th', {}, 'reason'))),
        h('tbody', {}, ...rows)
      )
    );
    const button = h('button', { class: 'jp-Button jp-mod-styled jp-mod-warn nbm-rollback', type: 'button' }, 'Rollback');
    button.addEventListener('click', () => void this.rollback());
    this.historyNode.appendChild(button);
  }

  private async rollback(): Promise<void> {
    const model = this.model;
    for (;;) {
      const result = await showDialog({
        title: `Roll back ${model}?`,
        body: new ReasonForm(model, 'the previous champion'),
        buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Rollback' })]
      });
      if (!result.button.accept) {
        return;
      }
      const reason = (result.value ?? '').trim();
      if (!reason) {
        await showErrorMessage('A reason is required', 'The journal records why the champion moved back.');
        continue;
      }
      try {
        await api.rollback(model, reason);
      } catch (error) {
        await showErrorMessage('Rollback failed', String((error as Error).message));
      }
      await this.loadHistory();
      return;
    }
  }
}

function championVersion(champion: unknown): unknown {
  if (champion && typeof champion === 'object' && 'version' in (champion as object)) {
    return (champion as { version: unknown }).version;
  }
  return champion;
}

/** "Nov 26, 2026, 06:05 PM" in the user's locale (the ISO time stays in the cell's tooltip). */
function shortTime(value: unknown): string {
  const when = new Date(asText(value));
  return Number.isNaN(when.getTime())
    ? asText(value)
    : when.toLocaleString(undefined, { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}
