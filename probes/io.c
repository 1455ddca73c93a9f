/* snapprof: image I/O probes (kernel/power/swap.c).
 *
 * Spans: swsusp_write (begin value = flags), save_image / save_image_lzo (6.1-6.8) /
 * save_compressed_image (6.9+) (begin value = pages to write), swsusp_read,
 * load_image / load_image_lzo / load_compressed_image (begin value = pages to read).
 * The kernel's own timing of the transfer comes from swsusp_show_speed ("Wrote", "Read"),
 * probed in shrink.c. In a real hibernation everything after the atomic copy is rolled
 * back by the restore: these fire in snapshot-and-continue runs (test_resume, no swap).
 */
SPAN_ARG_INT(swsusp_write, 1)
SPAN_ARG_INT(save_image, 3)
SPAN_ARG_INT(save_image_lzo, 3)
SPAN_ARG_INT(save_compressed_image, 3)
SPAN_INT(swsusp_read)
SPAN_ARG_INT(load_image, 3)
SPAN_ARG_INT(load_image_lzo, 3)
SPAN_ARG_INT(load_compressed_image, 3)
