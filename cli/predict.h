/* `i3rt predict`: nnU-Net v2 whole-case prediction from the command line (cli/predict.c).
 * cli/i3rt.c dispatches `i3rt predict ARGS` to cli_predict(argc, argv) with argv = ARGS. */
#ifndef I3RT_CLI_PREDICT_H
#define I3RT_CLI_PREDICT_H

int cli_predict(int argc, char **argv);

#endif /* I3RT_CLI_PREDICT_H */
