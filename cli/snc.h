/* `i3rt snc`: the Slice-and-Conquer session from the command line (cli/snc.c).
 * cli/i3rt.c dispatches `i3rt snc ARGS` to cli_snc(argc, argv) with argv = ARGS. */
#ifndef I3RT_CLI_SNC_H
#define I3RT_CLI_SNC_H

int cli_snc(int argc, char **argv);

#endif /* I3RT_CLI_SNC_H */
