export * from './types.js';
export * from './config.js';
export * from './inputs.js';
export * from './algorithm-facts.js';
export { createRuleContext, type RuleContextInput } from './context.js';
export { RULES, FRAMEWORK_RULES, rulesFor, getRule, evaluateRule, evaluateRules, sortFindings } from './catalog.js';
export { scanningRule, SIGNING_CAPABLE_STATES } from './helpers.js';
// Each rule is exported on its own (ALG_RSA_MIN, LC_PROTECT, PCI_10_2_2, FAU_GEN…) and in its part's list.
export { ALGORITHM_RULES, MODULE_RULES, ALG_RSA_MIN, ALG_112, ALG_PQ, ALG_CURVE, ALG_EDDSA, ALG_SHA1, ALG_PAD, ALG_KEK, MOD_140_2, MOD_STATUS, MOD_LEVEL } from './algorithm-rules.js';
export { LIFECYCLE_RULES, LC_PROTECT, LC_PROCESS, LC_CP_SIG, LC_DESTROY_ACTIVE, LC_PENDING, LC_EMERG, LC_PRIMARY, LC_RECORD, cryptoperiodEnd } from './lifecycle-rules.js';
export { PCI_RULES, PCI_3_6_1_2, PCI_3_7_4, PCI_3_7_5, PCI_3_7_6, PCI_3_7_7, PCI_10_2, PCI_10_2_2, PCI_10_3, PCI_10_5_1, PCI_EVENT_CLASSES } from './pci-rules.js';
export { NIST_RULES, SOC2_CC6_1, NIST_SC_12, NIST_SC_13, NIST_AU_9, NIST_AU_10, NIST_AU_11, NIST_AU_5 } from './nist-rules.js';
export { CC_RULES, FCS_CKM_1, FCS_CKM_4, FCS_COP_1, FAU_GEN } from './cc-rules.js';
