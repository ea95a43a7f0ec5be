// SPDX-License-Identifier: GPL-2.0
/*
 * The kernel's RAM: one arena from the host's page_alloc, aligned to the largest
 * buddy block so block arithmetic on PFNs holds, handed to memblock and then to
 * the buddy allocator. All of it is ZONE_NORMAL.
 */
#include <linux/init.h>
#include <linux/memblock.h>
#include <linux/mm.h>
#include <linux/pfn.h>
#include <asm/knic.h>

#define KNIC_ARENA_ALIGN	(PAGE_SIZE << MAX_PAGE_ORDER)
#define KNIC_DEFAULT_RAM	(64UL << 20)

unsigned long knic_ram_start, knic_ram_end;
unsigned long knic_ram_alloc_start, knic_ram_alloc_bytes;
void *empty_zero_page;

void __init knic_bootmem_init(unsigned long bytes)
{
	unsigned long zones_max_pfn[MAX_NR_ZONES] = { 0 };

	if (!bytes)
		bytes = KNIC_DEFAULT_RAM;
	bytes = ALIGN(bytes, KNIC_ARENA_ALIGN);
	knic_ram_alloc_bytes = bytes + KNIC_ARENA_ALIGN;
	knic_ram_alloc_start = (unsigned long)knic_host->page_alloc(knic_ram_alloc_bytes);
	if (!knic_ram_alloc_start)
		panic("knic: the host cannot give %lu bytes of RAM", knic_ram_alloc_bytes);

	knic_ram_start = ALIGN(knic_ram_alloc_start, KNIC_ARENA_ALIGN);
	knic_ram_end = knic_ram_start + bytes;
	min_low_pfn = PFN_UP(knic_ram_start);
	max_low_pfn = PFN_DOWN(knic_ram_end);
	max_pfn = max_low_pfn;

	memblock_add(knic_ram_start, bytes);
	empty_zero_page = memblock_alloc(PAGE_SIZE, PAGE_SIZE);
	if (!empty_zero_page)
		panic("knic: no memory for the zero page");

	zones_max_pfn[ZONE_NORMAL] = max_low_pfn;
	free_area_init(zones_max_pfn);
	pr_info("knic: %lu MiB of RAM at 0x%lx\n", bytes >> 20, knic_ram_start);
}

void __init mem_init(void)
{
	set_max_mapnr(max_low_pfn - min_low_pfn);
	high_memory = (void *)knic_ram_end;
	memblock_free_all();
}
