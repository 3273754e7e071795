/* `i3rt ensemble`: nnUNetv2_ensemble on `i3rt predict` probabilities (cli/ensemble.c).
 * cli/i3rt.c dispatches `i3rt ensemble ARGS` to cli_ensemble(argc, argv) with argv = ARGS. */
#ifndef I3RT_CLI_ENSEMBLE_H
#define I3RT_CLI_ENSEMBLE_H

int cli_ensemble(int argc, char **argv);

#endif /* I3RT_CLI_ENSEMBLE_H */
