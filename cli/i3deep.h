/* `i3rt i3deep`: the i3Deep stages from the command line (cli/i3deep.c).
 * cli/i3rt.c dispatches `i3rt i3deep ARGS` to cli_i3deep(argc, argv) with argv = ARGS. */
#ifndef I3RT_CLI_I3DEEP_H
#define I3RT_CLI_I3DEEP_H

int cli_i3deep(int argc, char **argv);

#endif /* I3RT_CLI_I3DEEP_H */
