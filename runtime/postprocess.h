/* nnU-Net v2's postprocessing, as nnUNetv2_apply_postprocessing applies what nnUNetv2_find_best_configuration
 * chose (nnunetv2/postprocessing/remove_connected_components.py): a list of
 * remove_all_but_largest_component_from_segmentation steps, each with the labels (or regions) it looks at.
 *
 * The choice is read from the postprocessing.json that nnU-Net writes beside postprocessing.pkl:
 *   {"postprocessing_fns": ["remove_all_but_largest_component_from_segmentation", ...],
 *    "postprocessing_kwargs": [{"labels_or_regions": [1, 2, 3]}, {"labels_or_regions": 2}, ...]}
 * (a label, a list of labels, or regions as lists of labels: each step's mask is the union of every label it
 * names, as region_or_label_to_mask ORs them; "background_label" defaults to 0). */
#ifndef I3RT_POSTPROCESS_H
#define I3RT_POSTPROCESS_H

#include "core.h"

#define I3_MAX_PP_STEPS 64
#define I3_MAX_PP_LABELS 256

typedef struct {
    int n_labels, labels[I3_MAX_PP_LABELS]; /* the step's mask: voxels holding any of these labels */
    int background;                         /* what the removed voxels become */
} i3_pp_step;

typedef struct {
    int n_steps;
    i3_pp_step steps[I3_MAX_PP_STEPS];
} i3_postprocessing;

/* Reads postprocessing.json; errors name the file and the problem (an unknown function among them). */
i3rt_status i3_postprocessing_read(i3_ctx *ctx, const char *path, i3_postprocessing *out);

/* remove_all_but_largest_component: in the mask (labels[v] one of the step's labels), the components
 * connected through faces, edges or corners (skimage.measure.label's full connectivity) that are not the
 * largest become the step's background; components tied for the largest all stay. */
i3rt_status i3_keep_largest_component(i3_ctx *ctx, int32_t *labels, const int64_t shape[3], const i3_pp_step *step);

/* Every step in order on a label map [shape] (d, h, w). */
i3rt_status i3_postprocess(i3_ctx *ctx, int32_t *labels, const int64_t shape[3], const i3_postprocessing *pp);

#endif /* I3RT_POSTPROCESS_H */
