/**
 * nb_mlops for JupyterLab: a Promote button in every notebook toolbar (declared in
 * `schema/plugin.json`, so users can move or hide it in the settings; unsaved changes are saved
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
  IToolbarWidgetRegistry,
  showDialog,
  showErrorMessage
} from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import {
  ITranslator,
  nullTranslator,
  TranslationBundle
} from '@jupyterlab/translation';
import { CommandToolbarButton, LabIcon } from '@jupyterlab/ui-components';
import { ReadonlyPartialJSONObject } from '@lumino/coreutils';

import * as api from './api';
import { describeError } from './errors';
import { IPromoteValue, PromoteForm } from './form';
import { INotebookInfo } from './models';
import { MlopsPanel } from './panel';

const PLUGIN_ID = 'nb_mlops:plugin';
const PROMOTE = 'nb-mlops:promote';
const RUN = 'nb-mlops:run-pipeline';
const SHOW = 'nb-mlops:show-panel';
/** The toolbar item's name in `schema/plugin.json` (`jupyter.lab.toolbars`). */
export const TOOLBAR_ITEM = 'nbMlopsPromote';

const rocketSvg =
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16"><path class="jp-icon3" fill="#616161" d="M12 2c3 2 5 6 5 10l2 3v4l-3-2H8l-3 2v-4l2-3c0-4 2-8 5-10zm0 6a2 2 0 100 4 2 2 0 000-4z"/></svg>';
export const promoteIcon = new LabIcon({
  name: 'nb-mlops:rocket',
  svgstr: rocketSvg
});

type Action = 'run' | 'promote';

/** Dialogs and calls of one Run / Promote request, from the saved notebook to a started job. */
class Submitter {
  constructor(
    private readonly app: JupyterFrontEnd,
    private readonly panel: MlopsPanel,
    private readonly trans: TranslationBundle
  ) {}

  async submit(action: Action, nb: NotebookPanel): Promise<void> {
    if (!(await this.saved(nb))) {
      return;
    }
    let info: INotebookInfo;
    try {
      info = await api.getNotebook(nb.context.path);
    } catch (error) {
      await showErrorMessage(
        this.trans.__('Cannot read the notebook'),
        describeError(error, this.trans)
      );
      return;
    }
    this.panel.setModel(info.model, info.ui_url);
    await this.askAndStart(action, nb, info);
  }

  /** Save unsaved changes on the user's word; false when they declined or saving failed. */
  private async saved(nb: NotebookPanel): Promise<boolean> {
    const trans = this.trans;
    if (!nb.context.model.dirty) {
      return true;
    }
    const choice = await showDialog({
      title: trans.__('Save the notebook?'),
      body: trans.__(
        '%1 has unsaved changes. The pipeline is built from the saved file: save now and continue?',
        nb.context.path
      ),
      buttons: [
        Dialog.cancelButton({ label: trans.__('Cancel') }),
        Dialog.okButton({ label: trans.__('Save and continue') })
      ]
    });
    if (!choice.button.accept) {
      return false;
    }
    try {
      await nb.context.save();
      return true;
    } catch (error) {
      await showErrorMessage(
        trans.__('Cannot save the notebook'),
        describeError(error, trans)
      );
      return false;
    }
  }

  /** Show the form until its values are valid and the job started, or the user cancels. */
  private async askAndStart(
    action: Action,
    nb: NotebookPanel,
    info: INotebookInfo
  ): Promise<void> {
    const trans = this.trans;
    let previous: IPromoteValue | undefined;
    let problem = '';
    for (;;) {
      const form = new PromoteForm(info, trans, previous);
      if (problem) {
        const line = document.createElement('div');
        line.className = 'nbm-error nbm-submit-error';
        line.textContent = problem;
        form.node.insertBefore(line, form.node.firstChild);
      }
      const result = await showDialog<IPromoteValue>({
        title:
          action === 'promote'
            ? trans.__('Promote %1', info.path)
            : trans.__('Run %1 as a pipeline', info.path),
        body: form,
        buttons: [
          Dialog.cancelButton({ label: trans.__('Cancel') }),
          Dialog.okButton({
            label: action === 'promote' ? trans.__('Promote') : trans.__('Run')
          })
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
        this.panel.setModel(result.value.model);
        this.panel.track(job);
        this.app.shell.activateById(this.panel.id);
        return;
      } catch (error) {
        problem = describeError(error, trans);
      }
    }
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description:
    'Promote a notebook to production through gates; follow jobs and roll back.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ICommandPalette, IToolbarWidgetRegistry, ITranslator],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    palette: ICommandPalette | null,
    toolbarRegistry: IToolbarWidgetRegistry | null,
    translator: ITranslator | null
  ) => {
    const trans = (translator ?? nullTranslator).load('nb_mlops');
    const panel = new MlopsPanel(trans);
    panel.title.icon = promoteIcon;
    app.shell.add(panel, 'right', { rank: 900 });
    const submitter = new Submitter(app, panel, trans);

    // A toolbar button passes its own notebook's id; the palette acts on the current one.
    const notebookFor = (
      args: ReadonlyPartialJSONObject
    ): NotebookPanel | null => {
      const id = typeof args.widgetId === 'string' ? args.widgetId : null;
      if (id) {
        return tracker.find(w => w.id === id) ?? null;
      }
      return tracker.currentWidget;
    };
    const submit = async (action: Action, args: ReadonlyPartialJSONObject) => {
      const nb = notebookFor(args);
      if (nb) {
        await submitter.submit(action, nb);
      }
    };

    app.commands.addCommand(PROMOTE, {
      label: args =>
        args.widgetId
          ? trans.__('Promote')
          : trans.__('Promote Notebook to Production…'),
      caption: trans.__(
        'Run this notebook as a gated pipeline and promote its model (unsaved changes are saved first)'
      ),
      icon: args => (args.widgetId ? promoteIcon : undefined),
      isEnabled: args => notebookFor(args) !== null,
      execute: args => submit('promote', args)
    });
    app.commands.addCommand(RUN, {
      label: trans.__('Run Notebook as Pipeline (headless)…'),
      caption: trans.__(
        'Run the notebook (saved first) as a pipeline in fresh kernels, without promoting'
      ),
      isEnabled: () => tracker.currentWidget !== null,
      execute: args => submit('run', args)
    });
    app.commands.addCommand(SHOW, {
      label: trans.__('Show MLOps Panel'),
      execute: () => app.shell.activateById(panel.id)
    });

    // The item itself (name, rank) is declared in schema/plugin.json; this makes its widget.
    toolbarRegistry?.addFactory<NotebookPanel>('Notebook', TOOLBAR_ITEM, nb => {
      const button = new CommandToolbarButton({
        commands: app.commands,
        id: PROMOTE,
        args: { widgetId: nb.id },
        label: trans.__('Promote')
      });
      button.addClass('nbm-promote-button');
      return button;
    });
    tracker.currentChanged.connect(() =>
      app.commands.notifyCommandChanged(PROMOTE)
    );
    if (palette) {
      const category = trans.__('MLOps');
      for (const command of [PROMOTE, RUN, SHOW]) {
        palette.addItem({ command, category });
      }
    }
  }
};

export default plugin;
