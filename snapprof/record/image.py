"""The image's size in a real hibernation, from the kernel's count before the atomic copy.

Standard library only (the recorder runs on the machine being hibernated).

In a real hibernation the restored system's memory is the image taken at the atomic copy:
what swsusp_save() works out while and after copying (nr_copy_pages, nr_meta_pages, the
zero pages it leaves out) is not in it, but the pages to copy are, counted before the copy
by count_data_pages() (the probes' copy_needed_pages, method probe) and logged as "Need to
copy N pages" (method kernel-log). kernel/power/snapshot.c then makes the image of

    data pages     = pages to copy - zero pages
    metadata pages = ceil(pages to copy x sizeof(long) / page size)
    image pages    = data pages + metadata pages + 1 (the swsusp_info header)

(snapshot_get_image_size()), which is exact from the pages to copy when the kernel leaves no
zero pages out: before 6.6, a kernel without the nr_zero_pages static. One that has it
finds its zero pages during the copy, so only the writing kernel knows the image's size
(its console's "Image created" and "Saving image data pages (N pages)" lines, which
``snapprof lab record`` joins to the run and snapprof.analysis.derived works the size out of).
"""

from __future__ import annotations

SOURCE = ("{pages:.0f} pages to copy ({source}) + ceil(pages x {long} / {page}) metadata + 1 "
          "header: exact, this kernel leaves no zero pages out (no nr_zero_pages)")
ZERO_PAGES = ("a real hibernation: the restored system holds only the pages to copy, counted "
              "before the copy ({pages:.0f}, zero pages included); this kernel (nr_zero_pages) "
              "leaves out the zero pages it finds while copying, so the image's size is known "
              "only to the writing kernel (its console's 'Image created' line, joined by "
              "snapprof lab record)")
UNKNOWN = ("a real hibernation: whether this kernel leaves zero pages out of the image is "
           "not known (kallsyms unreadable), so the pages to copy do not give its size")
HIGHMEM = ("a 32-bit kernel: its highmem pages are counted apart from the pages the log "
           "and the probes give, so the image's size is not worked out from them")
NO_COUNT = ("a real hibernation: the restored system has no count of the pages to copy (no "
            "count_data_pages probe in swsusp_save, no 'Need to copy N pages' log line)")


def image_from_pages_to_copy(need: tuple | None, zero_pages_left_out: bool | None,
                             page_size: int = 4096, long_bytes: int = 8
                             ) -> tuple[list[tuple], str | None]:
    """(metric rows for image_pages and image_bytes, None) or ([], why not).

    ``need``: the run's copy_needed_pages row (name, value, unit, method, source) or None;
    ``zero_pages_left_out``: KernelView.zero_pages_left_out(); ``long_bytes``: the kernel's
    sizeof(long)."""
    if need is None:
        return [], NO_COUNT
    if long_bytes != 8:  # 64-bit kernels have no highmem
        return [], HIGHMEM
    if zero_pages_left_out is None:
        return [], UNKNOWN
    if zero_pages_left_out:
        return [], ZERO_PAGES.format(pages=need[1])
    pages = int(need[1])
    meta = -(-pages * long_bytes // page_size)
    image = pages + meta + 1
    source = SOURCE.format(pages=pages, source=need[4] or need[3], long=long_bytes,
                           page=page_size)
    return [("image_pages", float(image), "pages", need[3], source),
            ("image_bytes", float(image * page_size), "bytes", need[3],
             f"image pages x {page_size}: {source}")], None
