/**
 * nb_mlops for JupyterLab: a Promote button in every notebook toolbar (unsaved changes are saved
 * first, on the user's word: the saved file is what runs), the MLOps panel in the right sidebar,
 * and palette commands.
 */
import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  Dialog,
  ICommandPalette,
  showDialog,
  showErrorMessage
} from '@jupyterlab/apputils';
import { DocumentRegistry } from '@jupyterlab/docregistry';
import {
  INotebookModel,
  INotebookTracker,
  NotebookPanel
} from '@jupyterlab/notebook';
import { CommandToolbarButton, LabIcon } from '@jupyterlab/ui-components';
import { IDisposable } from '@lumino/disposable';

import * as api from './api';
import { IPromoteValue, PromoteForm } from './form';
import { MlopsPanel } from './panel';

const CATEGORY = 'MLOps';
const PROMOTE = 'nb-mlops:promote';
const RUN = 'nb-mlops:run-pipeline';
const SHOW = 'nb-mlops:show-panel';
const PROMOTE_TIP = 'Run this notebook as a gated pipeline and promote its model (unsaved changes are saved first)';

const rocketSvg =
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16"><path class="jp-icon3" fill="#616161" d="M12 2c3 2 5 6 5 10l2 3v4l-3-2H8l-3 2v-4l2-3c0-4 2-8 5-10zm0 6a2 2 0 100 4 2 2 0 000-4z"/></svg>';
export const promoteIcon = new LabIcon({ name: 'nb-mlops:rocket', svgstr: rocketSvg });

/** Adds the Promote button to each notebook's toolbar. */
class ButtonExtension
  implements DocumentRegistry.IWidgetExtension<NotebookPanel, INotebookModel>
{
  constructor(private readonly app: JupyterFrontEnd) {}

  createNew(panel: NotebookPanel, _context: DocumentRegistry.IContext<INotebookModel>): IDisposable {
    const button = new CommandToolbarButton({
      commands: this.app.commands,
      id: PROMOTE,
      args: { widgetId: panel.id },
      label: 'Promote'
    });
    button.addClass('nbm-promote-button');
    panel.toolbar.insertItem(10, 'nbMlopsPromote', button);
    return button;
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'nb_mlops:plugin',
  description: 'Promote a notebook to production through gates; follow jobs and roll back.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    palette: ICommandPalette | null
  ) => {
    const panel = new MlopsPanel();
    panel.title.icon = promoteIcon;
    app.shell.add(panel, 'right', { rank: 900 });

    const notebookFor = (args: any): NotebookPanel | null => {
      const id = args && typeof args.widgetId === 'string' ? args.widgetId : null;
      if (id) {
        return tracker.find(w => w.id === id) ?? null;
      }
      return tracker.currentWidget;
    };
    const isDirty = (nb: NotebookPanel | null) => Boolean(nb?.context.model.dirty);

    const submit = async (action: 'run' | 'promote', args: any) => {
      const nb = notebookFor(args);
      if (!nb) {
        return;
      }
      if (isDirty(nb)) {
        const choice = await showDialog({
          title: 'Save the notebook?',
          body: `${nb.context.path} has unsaved changes. The pipeline is built from the saved file: save now and continue?`,
          buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Save and continue' })]
        });
        if (!choice.button.accept) {
          return;
        }
        try {
          await nb.context.save();
        } catch (error) {
          await showErrorMessage('Cannot save the notebook', String((error as Error).message));
          return;
        }
      }
      let info;
      try {
        info = await api.getNotebook(nb.context.path);
      } catch (error) {
        await showErrorMessage('Cannot read the notebook', String((error as Error).message));
        return;
      }
      panel.setModel(info.model, info.ui_url);
      let previous: IPromoteValue | undefined;
      let problem = '';
      for (;;) {
        const form = new PromoteForm(info, previous);
        if (problem) {
          form.node.insertBefore(
            Object.assign(document.createElement('div'), { className: 'nbm-error nbm-submit-error', textContent: problem }),
            form.node.firstChild
          );
        }
        const result = await showDialog<IPromoteValue>({
          title: action === 'promote' ? `Promote ${info.path}` : `Run ${info.path} as a pipeline`,
          body: form,
          buttons: [
            Dialog.cancelButton(),
            Dialog.okButton({ label: action === 'promote' ? 'Promote' : 'Run' })
          ],
          focusNodeSelector: 'input'
        });
        if (!result.button.accept || !result.value) {
          return;
        }
        previous = result.value;
        if (result.value.errors.length > 0) {
          problem = result.value.errors.join('; ');
          continue;
        }
        try {
          const job = await api.startJob({
            path: nb.context.path,
            parameters: result.value.parameters,
            model: result.value.model,
            action
          });
          panel.setModel(result.value.model);
          panel.track(job);
          app.shell.activateById(panel.id);
          return;
        } catch (error) {
          problem = String((error as Error).message);
        }
      }
    };

    app.commands.addCommand(PROMOTE, {
      label: args => (args.widgetId ? 'Promote' : 'Promote Notebook to Production…'),
      caption: PROMOTE_TIP,
      icon: args => (args.widgetId ? promoteIcon : undefined),
      isEnabled: args => notebookFor(args) !== null,
      execute: args => submit('promote', args)
    });
    app.commands.addCommand(RUN, {
      label: 'Run Notebook as Pipeline (headless)…',
      caption: 'Run the notebook (saved first) as a pipeline in fresh kernels, without promoting',
      isEnabled: () => tracker.currentWidget !== null,
      execute: args => submit('run', args)
    });
    app.commands.addCommand(SHOW, {
      label: 'Show MLOps Panel',
      execute: () => app.shell.activateById(panel.id)
    });

    app.docRegistry.addWidgetExtension('Notebook', new ButtonExtension(app));
    tracker.currentChanged.connect(() => app.commands.notifyCommandChanged(PROMOTE));
    if (palette) {
      for (const command of [PROMOTE, RUN, SHOW]) {
        palette.addItem({ command, category: CATEGORY });
      }
    }
  }
};

export default plugin;
